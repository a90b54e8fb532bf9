"""``voxssl pretrain``: the pretraining loop, top to bottom.

1. read the recipe's ``model`` and ``pretrain`` sections, join the torchrun group if any;
2. list the cached cases, build the model, the optimiser (Adam) and the view generator;
3. with ``resume``, load the latest checkpoint (weights, optimiser, RNG; the data needs only the
   step, because step k's batch is a function of (seed, rank, k));
4. for each step: wait for the batch (timed: the data-wait fraction), forward the views, combine
   the loss terms, then :func:`voxssl.training.optimizer_step` (backward, clip the gradient norm,
   step), as every voxssl loop does; log; checkpoint every N steps;
5. at the end: a last checkpoint and ``backbone.safetensors`` (weights + plan) for downstream use.

The learning rate is a function of the step only (constant after an optional linear warm-up), so
resuming only sets the step. TensorBoard (rank 0): ``loss/total``, ``loss/<term>``, ``train/lr``,
``train/grad_norm`` (before clipping), ``perf/steps_per_s``, ``perf/pairs_per_s``,
``perf/data_wait_fraction``, ``perf/gpu_memory_gb`` (GPU only) and the ``views/slice`` picture
(:mod:`voxssl.train.slice_panel`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxssl.config.loader import to_dict
from voxssl.config.model import model_config_to_dict
from voxssl.config.pretrain import PretrainConfig
from voxssl.config.recipe import Recipe, recipe_to_dict, require_section, save_resolved
from voxssl.data.pretrain_dataset import PairBatchSpec, PretrainPairs, make_loader
from voxssl.device import Amp, autocast, autocast_dtype, set_cpu_threads
from voxssl.distributed import (
    DistributedContext,
    all_reduce_mean,
    cleanup,
    init_distributed,
    wrap_ddp,
)
from voxssl.errors import ConfigError
from voxssl.models.build import build_pretrain_model
from voxssl.models.plan import Plan, preprocessing_plan
from voxssl.models.weights import save_weights
from voxssl.train import checkpoint as ckpt
from voxssl.train.builders import build_view_generator, select_cases
from voxssl.train.objective import PretrainObjective
from voxssl.train.online_probe import build_online_probe
from voxssl.train.performance import apply_memory_layout, build_adam, compile_model
from voxssl.train.slice_panel import slice_panel
from voxssl.training import (
    RunLogger,
    ThroughputMeter,
    check_finite,
    gpu_memory_gb,
    optimizer_step,
    restore_rng_state,
    rng_state,
)

log = logging.getLogger(__name__)

BACKBONE_FILE = "backbone.safetensors"
TENSORBOARD_DIR = "tensorboard"


@dataclass
class PretrainResult:
    run_dir: Path
    start_step: int  # 0, or the step a resumed run started from
    last_step: int  # optimizer steps done when the loop ended
    losses: dict[int, float] = field(default_factory=dict)  # step -> total loss (mean over ranks)
    terms: dict[int, dict[str, float]] = field(default_factory=dict)
    grad_norms: dict[int, float] = field(default_factory=dict)  # step -> norm before clipping
    backbone_path: Path | None = None  # written when the run reached pretrain.steps
    data_wait_fraction: float = 0.0  # over the whole run
    step_seconds: dict[int, float] = field(
        default_factory=dict
    )  # wall time of each step, data wait included
    data_wait_seconds: dict[int, float] = field(default_factory=dict)
    model: torch.nn.Module | None = None  # the trained PretrainModel (unwrapped), in train mode


def learning_rate(step: int, cfg: PretrainConfig) -> float:
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr


def to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }


def train_step(
    model: torch.nn.Module,
    objective: PretrainObjective,
    optimizer: torch.optim.Optimizer,
    batch: dict,
    grad_clip: float,
    amp: Amp = "auto",
):
    """One optimizer step: forward the views (under :func:`voxssl.device.autocast`'s rule for
    ``amp``: bf16 on GPU, fp32 on CPU), combine the loss terms, backward, clip the global
    gradient norm (``grad_clip`` 0: no clipping), step. Returns the objective's output and the
    gradient norm before clipping."""
    with autocast(batch["view1"].device, amp, "pretrain.amp"):
        out = objective(model, batch)
    grad_norm = optimizer_step(out.loss, optimizer, grad_clip, report_norm=True)["all"]
    return out, grad_norm


def fingerprint(recipe: Recipe, cfg: PretrainConfig, ctx: DistributedContext) -> dict:
    """What must not change between a run and its resumption."""
    # the online probe only observes the backbone: changing it never changes training
    pretrain = {
        k: v
        for k, v in to_dict(cfg).items()
        if k not in ckpt.RESUMABLE_CHANGES and k != "online_probe"
    }
    model = recipe.model
    if model is None:  # pretrain() requires the section before any fingerprint is taken
        raise ConfigError(f"{recipe.source_file}: a pretraining run needs a 'model' section")
    return {
        "model": model_config_to_dict(model),
        "pretrain": pretrain,
        "run": {"seed": recipe.seed, "world_size": ctx.world_size},
    }


def pretrain(
    recipe: Recipe, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> PretrainResult:
    """Pretrain the recipe's model on its cache; see the module docstring.

    Args:
        recipe: a loaded recipe with ``model`` and ``pretrain`` sections.
        resume: continue from the latest checkpoint in ``recipe.run_dir/checkpoints``.
        progress: show a tqdm progress bar (rank 0).
        stop_after: end the loop after this step *without* a final checkpoint, as a crash would
            (for tests and benchmarks of interruption/resume).
    """
    cfg: PretrainConfig = require_section(recipe, "pretrain", "pretrain")
    model_cfg = require_section(recipe, "model", "pretrain")
    ctx = init_distributed(cfg.device, device_key="pretrain.device")
    try:
        return _pretrain(
            recipe, cfg, model_cfg, ctx, resume=resume, progress=progress, stop_after=stop_after
        )
    finally:
        cleanup(ctx)


def _pretrain(recipe, cfg, model_cfg, ctx, *, resume, progress, stop_after) -> PretrainResult:
    run_dir, device = Path(recipe.run_dir), ctx.device

    # --- data and model ------------------------------------------------------------------------
    cases = select_cases(recipe, cfg)
    modality, channels = cases[0].modality, cases[0].num_channels
    if model_cfg.in_channels != channels:
        raise ConfigError(
            f"{recipe.source_file}: model.in_channels is {model_cfg.in_channels} but the cached "
            f"{modality} images have {channels} channel(s)"
        )
    autocast_dtype(cfg.amp, device, "pretrain.amp")  # a bad precision fails before any work
    set_cpu_threads(device, cfg.cpu_threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    torch.manual_seed(recipe.seed)  # same initial weights on every rank (DDP also broadcasts them)
    model = apply_memory_layout(build_pretrain_model(model_cfg).to(device), device)
    optimizer = build_adam(
        model.parameters(), device, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    preprocessing = preprocessing_plan(modality, recipe.preprocess, channels)
    resolved = recipe_to_dict(recipe)

    # --- resume ---------------------------------------------------------------------------------
    run_fingerprint = fingerprint(recipe, cfg, ctx)
    start_step, saved_rng = ckpt.restore_latest(
        run_dir, resume, run_fingerprint, model, optimizer, device
    )
    if saved_rng is not None:
        restore_rng_state(saved_rng)
    end_step = cfg.steps
    if start_step >= end_step:
        raise ConfigError(
            f"the run is already at step {start_step} >= pretrain.steps={end_step}; raise pretrain.steps"
        )
    train_model = wrap_ddp(
        model,
        ctx,
        find_unused_parameters=model.reconstruction_head is not None
        and cfg.reconstruction_weight == 0,
    )
    train_model = compile_model(train_model, cfg.compile)
    objective = PretrainObjective(cfg)

    views = build_view_generator(recipe, cfg, modality)
    spec = PairBatchSpec(cfg.pairs_per_step, cfg.pairs_per_volume, cfg.positives_per_pair)
    dataset = PretrainPairs(
        cases,
        views,
        spec,
        seed=recipe.seed,
        rank=ctx.rank,
        start_step=start_step,
        end_step=end_step,
    )
    loader = make_loader(
        dataset, cfg.num_workers, cfg.prefetch_factor, pin_memory=device.type == "cuda"
    )

    if ctx.is_main:
        save_resolved(recipe, run_dir)
    probe = build_online_probe(
        recipe,
        cfg.online_probe,
        modality=modality,
        channels=channels,
        device=device,
        is_main=ctx.is_main,
    )
    logger = RunLogger(
        run_dir / TENSORBOARD_DIR,
        total_steps=end_step,
        start_step=start_step,
        description="pretrain",
        enabled=ctx.is_main,
        progress=progress,
    )

    def plan(kind: str, step: int) -> Plan:
        return Plan.for_model(model_cfg, preprocessing, resolved, kind=kind, extra={"step": step})

    def save(step: int) -> None:
        if ctx.is_main:
            state = ckpt.TrainingState(
                step=step,
                optimizer=optimizer.state_dict(),
                rng=rng_state(),
                sampler={"seed": recipe.seed, "next_step": step},
                fingerprint=run_fingerprint,
            )
            ckpt.save_checkpoint(
                run_dir,
                state,
                lambda path: save_weights(path, model.state_dict(), plan("pretrain", step)),
                keep=cfg.keep_checkpoints,
            )

    # --- the loop -------------------------------------------------------------------------------
    result = PretrainResult(
        run_dir=run_dir, start_step=start_step, last_step=start_step, model=model
    )
    meter, total_wait, started = ThroughputMeter(), 0.0, time.perf_counter()
    model.train()
    expected = start_step
    wait_from = time.perf_counter()
    try:
        for batch in loader:
            data_wait = time.perf_counter() - wait_from
            step = int(batch["step"])
            if step != expected:
                raise RuntimeError(f"data loader delivered step {step}, expected {expected}")
            expected += 1
            batch = to_device(batch, device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, cfg)

            out, grad_norm = train_step(
                train_model, objective, optimizer, batch, cfg.grad_clip, cfg.amp
            )

            done = step + 1
            loss = float(all_reduce_mean(out.loss.detach(), ctx))
            terms = {k: float(all_reduce_mean(v, ctx)) for k, v in out.terms.items()}
            check_finite(loss, done, "lower pretrain.lr or check the data")
            result.losses[done], result.terms[done], result.last_step = loss, terms, done
            result.grad_norms[done] = float(grad_norm)
            meter.add(data_wait)
            total_wait += data_wait
            result.step_seconds[done] = time.perf_counter() - wait_from
            result.data_wait_seconds[done] = data_wait
            logger.advance(1, {"loss": loss})
            if done % cfg.log_every == 0 or done == end_step:
                scalars = {
                    "loss/total": loss,
                    **{f"loss/{k}": v for k, v in terms.items()},
                    "train/lr": optimizer.param_groups[0]["lr"],
                    "train/grad_norm": result.grad_norms[done],
                }
                scalars.update(meter.read(cfg.pairs_per_step * ctx.world_size))
                scalars.update(gpu_memory_gb(device))
                logger.scalars(done, scalars)
            if probe is not None and probe.due(done):
                logger.scalars(done, probe.run(model.backbone, done))
            if ctx.is_main and (done % cfg.image_every == 0 or done == end_step):
                logger.image(done, "views/slice", _panel(out.view1_output, batch))
            if done % cfg.checkpoint_every == 0 or done == end_step:
                save(done)
            if stop_after is not None and done >= stop_after:
                break
            wait_from = time.perf_counter()
    finally:
        logger.close()
        del loader  # stops the persistent workers

    result.data_wait_fraction = total_wait / max(time.perf_counter() - started, 1e-9)
    if result.last_step == end_step and ctx.is_main:
        result.backbone_path = save_weights(
            run_dir / BACKBONE_FILE, model.backbone.state_dict(), plan("backbone", end_step)
        )
        log.info("pretrained backbone written to %s", result.backbone_path)
    return result


@torch.no_grad()
def _panel(output, batch: dict) -> torch.Tensor:
    """Middle z slice of pair 0's view 1: image | reconstruction | PCA of the voxel embeddings."""
    view = batch["view1"][0].float()
    z = view.shape[-1] // 2
    size = view.shape[1:3]
    levels = []
    for i, level in enumerate(output.pyramid):
        plane = level[0, :, :, :, z >> i].float()
        plane = plane.repeat_interleave(2**i, dim=1).repeat_interleave(2**i, dim=2)[
            :, : size[0], : size[1]
        ]
        levels.append(plane)
    embedding = torch.cat(levels, dim=0)
    reconstruction = (
        None if output.reconstruction is None else output.reconstruction[0, :, :, :, z].float()
    )
    return slice_panel(view[:, :, :, z], reconstruction, embedding)


__all__ = [
    "BACKBONE_FILE",
    "TENSORBOARD_DIR",
    "PretrainResult",
    "learning_rate",
    "pretrain",
    "train_step",
]
