"""Which feature pyramid a downstream head reads: the model's voxel embedding or the raw decoder maps.

* ``projected``: what ``backbone(x)`` returns, the voxel-embedding pyramid the model was pretrained
  with (the balanced pyramid's per-level projections applied: 5 x 32 channels for the hierarchical
  preset). For a model without projections (vox2vec, imported published weights) it is the raw
  decoder maps.
* ``raw``: the decoder maps before any projection (``backbone.forward_features``, 32..512 channels
  for the hierarchical preset): what the authors' code probed (hierarchical-dense-ssl
  ``Probing``, vox2vec ``FPNLinearHead`` on ``backbone(x)``), and what imported published weights
  hold anyway (their projections were never saved).

One rule for voxssl-pretrained and imported weights alike, so the two are compared on the same
terms when a recipe names the same ``head.features``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, cast

import torch
from torch import nn

FeatureKind = Literal["projected", "raw"]
FEATURE_KINDS = ("projected", "raw")


def _check(features: str) -> None:
    if features not in FEATURE_KINDS:
        raise ValueError(f"head.features must be projected or raw, got {features!r}")


def pyramid_channels(backbone: nn.Module, features: str) -> list[int]:
    """Channels per level of the pyramid a head reads, level 0 first."""
    _check(features)
    name = (
        "feature_channels"
        if features == "raw" and hasattr(backbone, "feature_channels")
        else "level_channels"
    )
    return [int(c) for c in cast(Sequence[int], getattr(backbone, name))]


def backbone_pyramid(backbone: nn.Module, image: torch.Tensor, features: str) -> list[torch.Tensor]:
    """The pyramid of ``image`` that a head with ``features`` reads."""
    _check(features)
    if features == "raw" and hasattr(backbone, "forward_features"):
        forward = cast(Callable[[torch.Tensor], list[torch.Tensor]], backbone.forward_features)
        return forward(image)
    return backbone(image)


__all__ = ["FEATURE_KINDS", "FeatureKind", "backbone_pyramid", "pyramid_channels"]
