"""Learning-rate schedules of the downstream loops, indexed by step (resumable).

The head: ``constant`` or ``cosine`` (from ``lr`` down to 0 at the last step).

The backbone during fine-tuning:

Seed 004: "The backbone is initially frozen for 15K steps, after which the learning rate is
exponentially increased for the backbone parameters [...] during 1,200 steps." Between the
start value ``lr_start`` and the head's ``lr``, the rate grows geometrically:
``lr_start * (lr / lr_start) ** ((step - frozen_steps) / ramp_steps)``.
"""

from __future__ import annotations

import math


def head_lr(step: int, steps: int, lr: float, schedule: str = "constant") -> float:
    """Head learning rate at ``step`` of ``steps``."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))
    raise ValueError(f"unknown lr_schedule {schedule!r} (constant | cosine)")


def backbone_lr(step: int, frozen_steps: int, ramp_steps: int, lr_start: float, lr: float) -> float:
    """Backbone learning rate at ``step`` (0 while frozen)."""
    if step < frozen_steps:
        return 0.0
    if ramp_steps <= 0 or step >= frozen_steps + ramp_steps:
        return lr
    return lr_start * (lr / lr_start) ** ((step - frozen_steps) / ramp_steps)


__all__ = ["backbone_lr", "head_lr"]
