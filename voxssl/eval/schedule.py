"""Learning-rate schedule of the backbone during fine-tuning, indexed by step (resumable).

Seed 004: "The backbone is initially frozen for 15K steps, after which the learning rate is
exponentially increased for the backbone parameters [...] during 1,200 steps." Between the
start value ``lr_start`` and the head's ``lr``, the rate grows geometrically:
``lr_start * (lr / lr_start) ** ((step - frozen_steps) / ramp_steps)``.
"""

from __future__ import annotations


def backbone_lr(step: int, frozen_steps: int, ramp_steps: int, lr_start: float, lr: float) -> float:
    """Backbone learning rate at ``step`` (0 while frozen)."""
    if step < frozen_steps:
        return 0.0
    if ramp_steps <= 0 or step >= frozen_steps + ramp_steps:
        return lr
    return lr_start * (lr / lr_start) ** ((step - frozen_steps) / ramp_steps)


__all__ = ["backbone_lr"]
