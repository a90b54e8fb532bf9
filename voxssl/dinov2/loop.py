"""``voxssl dinov2 pretrain``: continued DINOv2 training, one loop read top to bottom.

1. read the ``dinov2`` section, join the torchrun group if any (DDP over the student; gloo on CPU);
2. list the images (cache slices, folders), build the student (the ViT loaded like the few-shot
   encoder, or initialised) with its heads, the teacher (a copy), AdamW with DINOv2's parameter
   groups;
3. with ``resume``, load the latest checkpoint (student, teacher, centers, optimiser, RNG; the data
   needs only the step);
4. each step: set the scheduled lr / weight decay / temperature / momentum, compute the objective
   (bf16 autocast on GPU), backward, clip each sub-network's gradient norm, step, move the teacher
   towards the student; log; checkpoint every N steps;
5. at the end: ``encoder.safetensors``, the teacher's ViT (DINOv2 evaluates the teacher) with its
   plan: ``fewshot.encoder.weights``, ``voxssl classify --weights`` and ``voxssl weights export``
   take it (or the run folder). A random initialisation is also kept, as
   ``encoder_init.safetensors``: the baseline that training must beat.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxssl.config.dinov2 import RESUMABLE_FIELDS, Dinov2Config
from voxssl.config.loader import to_dict
from voxssl.config.recipe import Recipe, recipe_to_dict, require_section, save_resolved
from voxssl.data.pretrain_dataset import make_loader
from voxssl.device import autocast, autocast_dtype, set_cpu_threads
from voxssl.dinov2.data import MultiCropBatches, build_pool
from voxssl.dinov2.model import build_pretrainer
from voxssl.dinov2.objective import Dinov2Objective
from voxssl.dinov2.param_groups import apply_step_values, parameter_groups
from voxssl.dinov2.schedules import schedule_values
from voxssl.distributed import (
    DistributedContext,
    all_reduce_mean,
    cleanup,
    init_distributed,
    wrap_ddp,
)
from voxssl.errors import ConfigError
from voxssl.models.plan import Plan, preprocessing_plan
from voxssl.models.vit import vit_patch_size, vit_plan
from voxssl.models.weights import save_weights
from voxssl.train import checkpoint as ckpt
from voxssl.training import (
    RunLogger,
    ThroughputMeter,
    check_finite,
    gpu_memory_gb,
    optimizer_step,
    restore_rng_state,
    rng_state,
)
from voxssl.transforms.intensity import IMAGENET_MEAN, IMAGENET_STD
from voxssl.transforms.multicrop import MultiCrop, MultiCropSettings

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.safetensors"
INIT_ENCODER_FILE = "encoder_init.safetensors"  # the random initialisation (pretrained: false)
TENSORBOARD_DIR = "tensorboard"


@dataclass
class Dinov2Result:
    run_dir: Path
    start_step: int
    last_step: int
    losses: dict[int, float] = field(default_factory=dict)  # step -> total loss (mean over ranks)
    terms: dict[int, dict[str, float]] = field(default_factory=dict)
    encoder_path: Path | None = None  # written when the run reached dinov2.optim.steps
    model: torch.nn.Module | None = None  # the Dinov2Pretrainer (unwrapped)


def fingerprint(recipe: Recipe, cfg: Dinov2Config, ctx: DistributedContext) -> dict:
    """What must not change between a run and its resumption."""
    section = {k: v for k, v in to_dict(cfg).items() if k not in RESUMABLE_FIELDS}
    return {
        "dinov2": section,
        "run": {"seed": recipe.seed, "world_size": ctx.world_size},
    }


def pretrain_dinov2(
    recipe: Recipe, *, resume: bool = False, progress: bool = True, stop_after: int | None = None
) -> Dinov2Result:
    """Continue DINOv2 training as the recipe's ``dinov2`` section says (module docstring).

    ``stop_after``: end after this step without a final checkpoint, as a crash would (tests).
    """
    cfg: Dinov2Config = require_section(recipe, "dinov2", "dinov2 pretrain")
    ctx = init_distributed(cfg.device, device_key="dinov2.device")
    try:
        return _pretrain(recipe, cfg, ctx, resume=resume, progress=progress, stop_after=stop_after)
    finally:
        cleanup(ctx)


def preprocessing_record(recipe: Recipe, cfg: Dinov2Config, pool) -> dict:
    """The ``preprocessing`` of the plan: what an image must look like for this encoder."""

    record: dict = {
        "input": "grey image in [0, 1] repeated to 3 channels",
        "normalise_imagenet": cfg.normalise_imagenet,
        "image_size": cfg.crops.global_size,
    }
    modalities = sorted({case.modality for case in pool.cases})
    if len(modalities) == 1 and not pool.files:
        record["cache"] = preprocessing_plan(modalities[0], recipe.preprocess)
        record["modality"] = modalities[0]
    if pool.files:
        record["folders"] = [str(f) for f in cfg.data.folders]
    return record


def _pretrain(recipe, cfg: Dinov2Config, ctx, *, resume, progress, stop_after) -> Dinov2Result:

    run_dir, device = Path(recipe.run_dir), ctx.device
    data = cfg.data
    pool = build_pool(
        Path(recipe.data.cache_dir) if data.cache else None,
        list(data.cache_sources),
        data.min_body_fraction,
        list(data.folders),
        recipe.source_file,
    )
    log.info("DINOv2 training on %s", pool.describe())
    autocast_dtype(cfg.amp, device, "dinov2.amp")  # a bad precision fails before any work
    set_cpu_threads(device, cfg.cpu_threads)
    torch.manual_seed(recipe.seed)  # same heads on every rank (DDP also broadcasts them)
    model = build_pretrainer(cfg).to(device)
    student = model.student
    heads = {"dino_head": student.dino_head}
    if student.ibot_head is not None:
        heads["ibot_head"] = student.ibot_head
    groups = parameter_groups(
        student.backbone, heads, cfg.optim.layerwise_decay, cfg.optim.patch_embed_lr_mult
    )
    optimizer = torch.optim.AdamW(groups, lr=0.0, betas=cfg.optim.betas)
    preprocessing = preprocessing_record(recipe, cfg, pool)
    resolved = recipe_to_dict(recipe)

    run_fingerprint = fingerprint(recipe, cfg, ctx)
    start_step, saved_rng = ckpt.restore_latest(
        run_dir, resume, run_fingerprint, model, optimizer, device
    )
    end_step = cfg.optim.steps
    if start_step >= end_step:
        raise ConfigError(
            f"the run is already at step {start_step} >= dinov2.optim.steps={end_step}; "
            f"raise dinov2.optim.steps"
        )
    train_student = wrap_ddp(student, ctx)
    objective = Dinov2Objective(cfg.loss, ctx)
    crops = MultiCropSettings(**to_dict(cfg.crops), normalise_imagenet=cfg.normalise_imagenet)
    dataset = MultiCropBatches(
        pool,
        MultiCrop(crops),
        cfg.optim.batch_size,
        vit_patch_size(student.backbone),
        cfg.loss.mask_ratio,
        cfg.loss.mask_probability,
        seed=recipe.seed,
        rank=ctx.rank,
        world_size=ctx.world_size,
        start_step=start_step,
        end_step=end_step,
    )
    loader = make_loader(
        dataset, cfg.num_workers, cfg.prefetch_factor, pin_memory=device.type == "cuda"
    )
    if ctx.is_main:
        save_resolved(recipe, run_dir)
    logger = RunLogger(
        run_dir / TENSORBOARD_DIR,
        total_steps=end_step,
        start_step=start_step,
        description="dinov2 pretrain",
        enabled=ctx.is_main,
        progress=progress,
    )

    def plan(kind: str, step: int, network) -> Plan:
        return vit_plan(network, preprocessing, resolved, kind=kind, extra={"step": step})

    def save(step: int) -> None:
        if not ctx.is_main:
            return
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
            lambda path: save_weights(
                path, model.state_dict(), plan("pretrain", step, student.backbone)
            ),
            keep=cfg.keep_checkpoints,
        )

    if start_step == 0 and not cfg.vit.pretrained and ctx.is_main:
        # a random start has no file of its own: keep it, the baseline continued training must beat
        save_weights(
            run_dir / INIT_ENCODER_FILE,
            student.backbone.state_dict(),
            vit_plan(
                student.backbone, preprocessing, resolved, extra={"step": 0, "init": "random"}
            ),
        )
    result = Dinov2Result(run_dir=run_dir, start_step=start_step, last_step=start_step, model=model)
    meter = ThroughputMeter()
    model.train()
    expected = start_step
    wait_from = time.perf_counter()
    batches = iter(loader)  # draws its base seed from torch's generator: before the restore
    if saved_rng is not None:
        restore_rng_state(saved_rng)
    try:
        for batch in batches:
            data_wait = time.perf_counter() - wait_from
            step = int(batch["step"])
            if step != expected:
                raise RuntimeError(f"data loader delivered step {step}, expected {expected}")
            expected += 1
            batch = {
                k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()
            }
            values = schedule_values(step, cfg, ctx.world_size)
            apply_step_values(optimizer, values.lr, values.last_layer_lr, values.weight_decay)
            with autocast(device, cfg.amp, "dinov2.amp"):
                out = objective(model, train_student, batch, values.teacher_temperature)
            parts = {"backbone": student.backbone, **heads}  # DINOv2 clips each one on its own
            grad_norms = optimizer_step(
                out.loss,
                optimizer,
                cfg.optim.clip_grad,
                parts={name: part.parameters() for name, part in parts.items()},
            )
            model.update_teacher(values.momentum)

            done = step + 1
            loss = float(all_reduce_mean(out.loss.detach(), ctx))
            terms = {k: float(all_reduce_mean(v, ctx)) for k, v in out.terms.items()}
            check_finite(loss, done, "lower dinov2.optim.base_lr or check the data")
            result.losses[done], result.terms[done], result.last_step = loss, terms, done
            meter.add(data_wait)
            logger.advance(1, {"loss": loss})
            if done % cfg.log_every == 0 or done == end_step:
                scalars = {
                    "loss/total": loss,
                    **{f"loss/{k}": v for k, v in terms.items()},
                    "train/lr": values.lr,
                    "train/last_layer_lr": values.last_layer_lr,
                    "train/weight_decay": values.weight_decay,
                    "train/teacher_momentum": values.momentum,
                    "train/teacher_temperature": values.teacher_temperature,
                    "train/masked_patches": float(out.masked_patches),
                    **{f"train/grad_norm_{k}": v for k, v in grad_norms.items()},
                }
                rates = meter.read(cfg.optim.batch_size * ctx.world_size)
                scalars["perf/steps_per_s"] = rates["perf/steps_per_s"]
                scalars["perf/images_per_s"] = rates["perf/pairs_per_s"]
                scalars["perf/data_wait_fraction"] = rates["perf/data_wait_fraction"]
                scalars.update(gpu_memory_gb(device))
                logger.scalars(done, scalars)
            if ctx.is_main and (done % cfg.image_every == 0 or done == end_step):
                logger.image(done, "crops/global_local_mask", _panel(batch, crops))
            if done % cfg.checkpoint_every == 0 or done == end_step:
                save(done)
            if stop_after is not None and done >= stop_after:
                break
            wait_from = time.perf_counter()
    finally:
        logger.close()
        del batches, loader  # stops the persistent workers

    if result.last_step == end_step and ctx.is_main:
        teacher_backbone = model.teacher.backbone
        result.encoder_path = save_weights(
            run_dir / ENCODER_FILE,
            teacher_backbone.state_dict(),
            plan("backbone", end_step, teacher_backbone),
        )
        log.info("encoder (EMA teacher) written to %s", result.encoder_path)
    return result


@torch.no_grad()
def _panel(batch: dict, crops) -> torch.Tensor:
    """Image 0's two global crops (the first with its iBOT mask darkened) and first local crop."""
    import torch.nn.functional as F

    images = batch["global_crops"].shape[0] // 2
    size = batch["global_crops"].shape[-1]

    def grey(crop: torch.Tensor) -> torch.Tensor:
        channel = crop[0].float().cpu()
        if crops.normalise_imagenet:
            channel = channel * IMAGENET_STD[0] + IMAGENET_MEAN[0]
        return channel.clamp(0, 1)

    first, second = grey(batch["global_crops"][0]), grey(batch["global_crops"][images])
    mask = batch["masks"][0].float().cpu()
    grid = round(mask.numel() ** 0.5)
    shade = F.interpolate(mask.view(1, 1, grid, grid), size=(size, size), mode="nearest")[0, 0]
    panels = [first * (1 - 0.6 * shade), second]
    if batch["local_crops"].shape[0]:
        local = grey(batch["local_crops"][0])[None, None]
        panels.append(F.interpolate(local, size=(size, size), mode="nearest")[0, 0])
    return torch.cat(panels, dim=1).expand(3, -1, -1)


__all__ = [
    "ENCODER_FILE",
    "INIT_ENCODER_FILE",
    "TENSORBOARD_DIR",
    "Dinov2Result",
    "fingerprint",
    "pretrain_dinov2",
]
