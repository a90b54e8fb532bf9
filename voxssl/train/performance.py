"""How a pretraining step runs fast on its device: memory layout (the rule lives in
:func:`voxssl.device.channels_last_min_voxels`, beside the precision rule), optimizer
implementation and ``torch.compile``.

None of these choices changes the result beyond float rounding (bf16 autocast on GPU excepted,
which is a precision choice: the losses stay in float32); tests/train/test_fast_step.py checks
the loss, the gradients and one optimizer step's parameters of voxssl's step against the plain
eager reference step (benchmarks/eager_reference.py) on a tiny model.

Measured on the 2-core development CPU (benchmarks/README.md, "Pretraining throughput"):

- memory layout: oneDNN's 3D convolutions run 1.1-1.6x faster in ``channels_last_3d`` on maps of
  at least 32x32x8 voxels per sample, and up to 2x *slower* on maps of a few hundred voxels
  (the deep FPN levels), so on CPU a level runs channels-last when it holds at least
  ``voxssl.device.CPU_CHANNELS_LAST_MIN_VOXELS`` voxels per sample and contiguous below. On GPU every
  level runs channels-last (cuDNN's NDHWC kernels, the layout PyTorch recommends for bf16
  tensor cores; not measured here: no GPU was lent);
- optimizer: Adam's ``fused=True`` implementation (one kernel over all parameters instead of
  ~5 per parameter tensor) where PyTorch has it for the device (CPU, CUDA);
- views in one batch: :class:`voxssl.train.objective.PretrainObjective` forwards the views of
  a step as one batch with batch-norm statistics per view (larger convolutions, oneDNN instead
  of the slow reference kernels for batch-1 deep levels);
- no layout copies: a one-channel input gets explicit channels-last strides, 1x1 convolutions of
  a channels-last map run as one matrix product (:class:`voxssl.models.blocks.PointwiseConv3d`),
  the voxel gather indexes a channels-last level as (B, *S, C) so the gradient it writes stays
  channels-last, and the encoder stages' gradients are kept in their layout (a contiguous
  gradient made oneDNN's level-0 backward ~1.3x slower);
- small maps: a 3x3x3 convolution whose weight dwarfs its map (the 512-channel deepest levels)
  runs as patches @ weight on the CPU (:class:`voxssl.models.blocks.SmallMapConv3d`).

A profile of the vox2vec step (64x64x32, one thread) after these changes: convolution backward
~57 % (level 0's eight 3x3x3 backward passes alone ~30 %, most of it the 16-channel weight
gradient, which oneDNN computes at about half its forward rate), convolution forward ~18 %, the
projector's matrix products ~10 %, batch norm ~3 %, Adam ~1 %.
"""

from __future__ import annotations

import logging
from typing import cast

import torch
from torch import nn

from voxssl.models.fpn import apply_memory_layout

log = logging.getLogger(__name__)


def fused_adam_supported(device: torch.device) -> bool:
    return device.type in ("cpu", "cuda")


def build_adam(
    parameters, device: torch.device, *, lr: float, betas, weight_decay: float
) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the fused implementation where the device has one."""
    return torch.optim.Adam(
        parameters,
        lr=lr,
        betas=tuple(betas),
        weight_decay=weight_decay,
        fused=True if fused_adam_supported(device) else None,
    )


def compile_model(model: nn.Module, enabled: bool, backend: str = "inductor") -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (``pretrain.compile``), else ``model``.

    The compiled module shares its parameters with ``model``; the loop keeps saving ``model``'s
    state dict, so checkpoints carry no ``_orig_mod.`` prefix. Compilation happens on the first
    step: meant for long GPU runs. On the 2-core development CPU the inductor compilation of the
    vox2vec model had not finished its first step after 15 minutes (C++ code generation), so
    CPU runs leave it off. ``backend``: torch.compile's backend (tests use ``aot_eager``, which
    traces the same graphs without generating code).
    """
    if not enabled:
        return model
    log.info("compiling the model with torch.compile (the first step compiles; minutes)")
    return cast(nn.Module, torch.compile(model, backend=backend))  # an OptimizedModule


__all__ = ["apply_memory_layout", "build_adam", "compile_model", "fused_adam_supported"]
