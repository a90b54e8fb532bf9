"""Backbones (the 3D FPN), heads, voxel gathering and the self-describing weights format.

Names are imported lazily: ``import voxssl.models.gather`` does not pull in MONAI.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FPN": "voxssl.models.fpn",
    "build_backbone": "voxssl.models.build",
    "build_pretrain_model": "voxssl.models.build",
    "embedding_dim": "voxssl.models.build",
    "feature_channels": "voxssl.models.build",
    "level_channels": "voxssl.models.build",
    "gather_voxel_embeddings": "voxssl.models.gather",
    "Plan": "voxssl.models.plan",
    "save_weights": "voxssl.models.weights",
    "load_weights": "voxssl.models.weights",
    "load_backbone": "voxssl.models.weights",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'voxssl.models' has no attribute {name!r}")


__all__ = list(_EXPORTS)
