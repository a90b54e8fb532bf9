"""Where tensors run and in which precision: one rule for every training loop and every inference.

Device (recipe ``device``, ``voxssl predict --device``):

* ``auto``: the process's GPU when CUDA is available (``cuda:LOCAL_RANK`` under torchrun), else
  the CPU;
* ``cuda`` / ``cuda:N``: that GPU; without CUDA it is a :class:`~voxssl.errors.ConfigError` that
  names the recipe key, never a silent fall-back to the CPU;
* ``cpu``.

Precision (recipe ``amp``): bf16 autocast on a GPU, fp32 on the CPU, whatever the recipe says,
because CPUs without native bf16 run bf16 3D convolutions about 100x slower. ``amp`` is ``auto``
(or ``true``): bf16 on GPU, fp32 on CPU; ``fp32`` (or ``false``): fp32 everywhere; ``bf16``: bf16 on
GPU, and an error on the CPU (it asks for something the CPU cannot do fast).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

from voxssl.errors import ConfigError

#: What a recipe's ``amp`` may say (booleans are the downstream and few-shot spelling of auto/fp32).
Amp = Literal["auto", "bf16", "fp32"] | bool


def resolve_device(requested: str, key: str = "device", local_rank: int = 0) -> torch.device:
    """The ``torch.device`` for ``requested`` (see the module docstring); ``key`` names the setting
    in errors (``pretrain.device``, ``--device``)."""
    text = str(requested).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ConfigError(
            f"{key} must be one of auto, cpu, cuda or cuda:N, got {requested!r}"
        ) from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ConfigError(f"{key} must be one of auto, cpu, cuda or cuda:N, got {requested!r}")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"{key} is {requested!r} but no CUDA device is available to this torch "
            f"({torch.__version__}); use 'auto' or 'cpu'"
        )
    index = local_rank if device.index is None else device.index
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"{key}: cuda:{index} does not exist (this machine has {torch.cuda.device_count()} GPU(s))"
        )
    return torch.device("cuda", index)


def set_cpu_threads(device: torch.device, threads: int) -> None:
    """On the CPU, ``threads > 0`` sets torch's intra-op threads (0 keeps torch's default)."""
    if device.type == "cpu" and threads > 0:
        torch.set_num_threads(threads)


def autocast_dtype(amp: Amp, device: torch.device, key: str = "amp") -> torch.dtype | None:
    """The autocast dtype for ``amp`` on ``device``: bf16 on a GPU, None (fp32) otherwise."""
    if amp is True:
        amp = "auto"
    elif amp is False:
        amp = "fp32"
    if amp not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"{key} must be auto, bf16 or fp32, got {amp!r}")
    if amp == "fp32":
        return None
    if device.type == "cuda":
        return torch.bfloat16
    if amp == "bf16":
        raise ConfigError(
            f"{key} is 'bf16' but this runs on the CPU, where bf16 is ~100x slower; use auto"
        )
    return None


def autocast(
    device: torch.device, amp: Amp = "auto", key: str = "amp"
) -> contextlib.AbstractContextManager:
    """``torch.autocast`` with :func:`autocast_dtype`'s rule, or a no-op context in fp32."""
    dtype = autocast_dtype(amp, device, key)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# Memory layout of 3D feature maps (the FPN applies it level by level, voxssl.models.fpn).
# Per-sample voxels from which a level runs in channels_last_3d on CPU, measured with oneDNN on the
# 2-core development CPU (benchmarks/README.md, "Pretraining throughput"): 32x32x16 maps gain
# 1.6x, 16x16x8 1.0-1.3x, 8x8x4 and smaller lose up to 2x (the slow reference kernels run there).
CPU_CHANNELS_LAST_MIN_VOXELS = 2048


def channels_last_min_voxels(device: torch.device) -> int | None:
    """Per-sample voxels from which a feature map runs in ``channels_last_3d`` on ``device``:
    :data:`CPU_CHANNELS_LAST_MIN_VOXELS` on the CPU, 0 (every map) on a GPU (cuDNN's NDHWC
    kernels, PyTorch's recommendation for bf16 tensor cores; not measured on a GPU yet), None
    (leave the layout alone) elsewhere."""
    if device.type == "cpu":
        return CPU_CHANNELS_LAST_MIN_VOXELS
    if device.type == "cuda":
        return 0
    return None


__all__ = [
    "CPU_CHANNELS_LAST_MIN_VOXELS",
    "Amp",
    "autocast",
    "autocast_dtype",
    "channels_last_min_voxels",
    "resolve_device",
    "set_cpu_threads",
]
