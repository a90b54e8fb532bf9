"""DINOv2's schedules, each a function of the step only (so resuming only sets the step).

DINOv2's ``CosineScheduler(base, final, total, warmup, start_warmup, freeze)``: ``freeze`` steps at
0, then ``warmup`` steps on ``numpy.linspace(start_warmup, base, warmup)`` (both ends included),
then a half cosine from ``base`` to ``final`` over the remaining steps; ``final`` from ``total`` on.

- learning rate: linear warm-up from 0, cosine to ``min_lr``;
- weight decay: cosine from ``weight_decay`` to ``weight_decay_end``;
- teacher momentum: cosine from ``momentum`` to ``final_momentum``;
- teacher temperature: linear from ``warmup_temperature`` to ``temperature`` over its warm-up,
  then constant;
- learning rate of the prototypes (the heads' last layers): the learning rate, but 0 for the first
  ``freeze_last_layer_steps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from voxssl.config.dinov2 import Dinov2Config


def cosine_schedule(
    step: int,
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    warmup_start: float = 0.0,
    freeze_steps: int = 0,
) -> float:
    """Value of DINOv2's ``CosineScheduler`` at ``step`` (see the module docstring)."""
    if step >= total_steps:
        return final
    if step < freeze_steps:
        return 0.0
    step -= freeze_steps
    if step < warmup_steps:
        if warmup_steps == 1:
            return warmup_start
        return warmup_start + (base - warmup_start) * step / (warmup_steps - 1)
    step -= warmup_steps
    length = total_steps - warmup_steps - freeze_steps
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * step / length))


@dataclass(frozen=True)
class StepValues:
    lr: float
    last_layer_lr: float
    weight_decay: float
    momentum: float
    teacher_temperature: float


def schedule_values(step: int, cfg: Dinov2Config, world_size: int = 1) -> StepValues:
    optim, teacher = cfg.optim, cfg.teacher
    total = optim.steps
    lr = cosine_schedule(step, optim.lr(world_size), optim.min_lr, total, optim.warmup_steps)
    temperature_steps = teacher.temperature_warmup_steps
    return StepValues(
        lr=lr,
        last_layer_lr=0.0 if step < optim.freeze_last_layer_steps else lr,
        weight_decay=cosine_schedule(step, optim.weight_decay, optim.weight_decay_end, total),
        momentum=cosine_schedule(step, teacher.momentum, teacher.final_momentum, total),
        teacher_temperature=cosine_schedule(
            step,
            teacher.temperature,
            teacher.temperature,
            temperature_steps,
            temperature_steps,
            teacher.warmup_temperature,
        ),
    )


__all__ = ["StepValues", "cosine_schedule", "schedule_values"]
