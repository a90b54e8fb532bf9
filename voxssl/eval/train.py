"""The downstream training loop (probe and fine-tune), read top to bottom.

Adam over two parameter groups: the head at ``cfg.lr`` (or its cosine decay, ``lr_schedule``); the backbone (fine-tuning only) at the
rate of :func:`voxssl.eval.schedule.backbone_lr` for the current step, frozen (and in eval mode)
until ``frozen_steps``. bf16 autocast is used on CUDA only.

A batch holds either ``image`` patches (the backbone runs on them) or ``levels``, patches of a
frozen backbone's cached pyramid (:class:`voxssl.eval.feature_cache.CachedPatchSampler`): then
only the head runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from voxssl.config.downstream import DownstreamConfig, FinetuneConfig
from voxssl.device import autocast
from voxssl.eval.sampling import PatchSampler
from voxssl.eval.schedule import backbone_lr, head_lr
from voxssl.losses.segmentation import SegmentationLoss
from voxssl.models.segmentation import SegmentationModel

log = logging.getLogger(__name__)


@dataclass
class BackboneSchedule:
    frozen_steps: int
    ramp_steps: int
    lr_start: float
    lr: float

    @classmethod
    def from_config(cls, cfg: FinetuneConfig) -> BackboneSchedule:
        if cfg.from_scratch:  # a randomly initialised backbone trains from step 0 at the full rate
            return cls(0, 0, cfg.lr, cfg.lr)
        return cls(cfg.frozen_steps, cfg.ramp_steps, cfg.backbone_lr_start, cfg.lr)

    def lr_at(self, step: int) -> float:
        return backbone_lr(step, self.frozen_steps, self.ramp_steps, self.lr_start, self.lr)


def train_segmentation(
    model: SegmentationModel,
    sampler: PatchSampler,
    cfg: DownstreamConfig,
    device: torch.device,
    schedule: BackboneSchedule | None = None,
    description: str = "train",
    tensorboard_dir: Path | None = None,
    validate: Callable[[int], dict[str, float]] | None = None,
    val_every: int = 0,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` for ``cfg.steps`` steps; returns the logged history (step, loss, lrs)."""
    from tqdm.auto import tqdm

    model.to(device)
    criterion = SegmentationLoss(cfg.loss, cfg.dice_weight)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr, "name": "head"}]
    if schedule is not None:
        backbone_params = [p for p in model.backbone.parameters() if p.is_floating_point()]
        groups.append({"params": backbone_params, "lr": 0.0, "name": "backbone"})
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    writer = _tensorboard(tensorboard_dir) if cfg.tensorboard and tensorboard_dir else None
    history: list[dict[str, float]] = []
    model.train()
    running, started = 0.0, time.perf_counter()
    bar = tqdm(
        range(cfg.steps),
        desc=description,
        unit="step",
        dynamic_ncols=True,
        leave=False,
        disable=not progress,
    )
    for step in bar:
        if schedule is not None:
            lr_backbone = schedule.lr_at(step)
            if (lr_backbone > 0) != model.backbone_trainable:
                model.set_backbone_trainable(lr_backbone > 0)
                model.train()
                log.info(
                    "%s: backbone %s at step %d",
                    description,
                    "unfrozen" if lr_backbone > 0 else "frozen",
                    step,
                )
            optimizer.param_groups[1]["lr"] = lr_backbone
        lr = head_lr(step, cfg.steps, cfg.lr, cfg.lr_schedule)
        optimizer.param_groups[0]["lr"] = lr
        batch = to_device(sampler.batch(cfg.batch_size), device)
        voxel_mask = batch["body"] if cfg.body_restricted_loss else torch.ones_like(batch["body"])
        with autocast(device, cfg.amp):
            logits = model.head(batch["levels"]) if "levels" in batch else model(batch["image"])
        loss = criterion(logits.float(), batch["target"], voxel_mask, batch["annotated"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{description}: loss is {value} at step {step}")
        running += value
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            count = (step % cfg.log_every) + 1
            entry = {"step": step + 1, "loss": running / count, "lr_head": lr}
            if schedule is not None:
                entry["lr_backbone"] = optimizer.param_groups[1]["lr"]
            entry["seconds"] = time.perf_counter() - started
            history.append(entry)
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            log.debug("%s %s", description, entry)
            if writer is not None:
                for key, val in entry.items():
                    if key != "step":
                        writer.add_scalar(f"train/{key}", val, step + 1)
            running = 0.0
        if validate is not None and val_every > 0 and (step + 1) % val_every == 0:
            scores = validate(step + 1)
            model.train()
            log.info(
                "%s step %d: validation mean Dice %.1f %%",
                description,
                step + 1,
                100 * scores.get("mean_dice", float("nan")),
            )
            if writer is not None:
                for key, val in scores.items():
                    writer.add_scalar(f"val/{key}", val, step + 1)
    bar.close()
    if writer is not None:
        writer.close()
    model.eval()
    return history


def to_device(batch: dict, device: torch.device) -> dict:
    """numpy arrays (and lists of them, the cached levels) -> tensors on ``device``."""

    def move(value):
        if isinstance(value, list):
            return [move(v) for v in value]
        return torch.from_numpy(value).to(device, non_blocking=True)

    return {key: move(value) for key, value in batch.items()}


def _tensorboard(path: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(path))


__all__ = ["BackboneSchedule", "to_device", "train_segmentation"]
