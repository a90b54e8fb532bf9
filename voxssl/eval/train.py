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
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxssl.config.downstream import DownstreamConfig, FinetuneConfig
from voxssl.device import autocast
from voxssl.eval.sampling import PatchSampler
from voxssl.eval.schedule import backbone_lr, head_lr
from voxssl.losses.segmentation import SegmentationLoss
from voxssl.models.segmentation import SegmentationModel
from voxssl.training import RunLogger, check_finite, optimizer_step

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
    model.to(device)
    criterion = SegmentationLoss(cfg.loss, cfg.dice_weight)
    groups: list[dict[str, Any]] = [
        {"params": list(model.head.parameters()), "lr": cfg.lr, "name": "head"}
    ]
    if schedule is not None:
        backbone_params = [p for p in model.backbone.parameters() if p.is_floating_point()]
        groups.append({"params": backbone_params, "lr": 0.0, "name": "backbone"})
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    logger = RunLogger(
        tensorboard_dir if cfg.tensorboard else None,
        total_steps=cfg.steps,
        description=description,
        progress=progress,
    )
    history: list[dict[str, float]] = []
    model.train()
    running, started = 0.0, time.perf_counter()
    for step in range(cfg.steps):
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
        optimizer_step(loss, optimizer, cfg.grad_clip)
        value = float(loss.detach())
        check_finite(value, step + 1, f"{description}: lower the learning rate or check the labels")
        running += value
        logger.advance(1)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            count = (step % cfg.log_every) + 1
            entry = {"step": step + 1, "loss": running / count, "lr_head": lr}
            if schedule is not None:
                entry["lr_backbone"] = optimizer.param_groups[1]["lr"]
            entry["seconds"] = time.perf_counter() - started
            history.append(entry)
            logger.advance(0, {"loss": entry["loss"]})
            log.debug("%s %s", description, entry)
            logger.scalars(step + 1, {f"train/{k}": v for k, v in entry.items() if k != "step"})
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
            logger.scalars(step + 1, {f"val/{k}": v for k, v in scores.items()})
    logger.close()
    model.eval()
    return history


def to_device(batch: dict, device: torch.device) -> dict:
    """numpy arrays (and lists of them, the cached levels) -> tensors on ``device``."""

    def move(value):
        if isinstance(value, list):
            return [move(v) for v in value]
        return torch.from_numpy(value).to(device, non_blocking=True)

    return {key: move(value) for key, value in batch.items()}


__all__ = ["BackboneSchedule", "to_device", "train_segmentation"]
