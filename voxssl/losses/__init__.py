"""Pretraining losses, one per module: InfoNCE (NT-Xent), reconstruction (MSE), equivariance.

Names are imported lazily, so ``import voxssl.losses.infonce`` stays light (no MONAI import).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "InfoNCELoss": "voxssl.losses.infonce",
    "ReconstructionLoss": "voxssl.losses.reconstruction",
    "EquivarianceLoss": "voxssl.losses.equivariance",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'voxssl.losses' has no attribute {name!r}")


__all__ = list(_EXPORTS)
