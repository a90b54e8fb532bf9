"""voxssl's own pretrained 3D FPN as a few-shot encoder: prototypes from voxel embeddings.

The slice to segment is given with ``slab_slices`` neighbours (a (N, K, H, W) slab, slice axis
first as the 2D pipeline stacks it). The slab goes through the 3D FPN as (N, 1, H, W, K); the
voxel embedding of every pixel of the middle slice is the concatenation over pyramid levels of
the feature of the cell that contains it (level i: index ``v // 2**i``, as
:mod:`voxssl.models.gather` defines it). The backbone is frozen by default: ALP has no
parameters, so few-shot evaluation needs no training at all (``voxssl few-shot eval`` directly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from voxssl.models.build import level_channels
from voxssl.models.weights import load_backbone


def middle_slice_embeddings(
    pyramid: list[torch.Tensor], middle: int, height: int, width: int
) -> torch.Tensor:
    """(N, sum C_i, H, W) embeddings of slice ``middle`` from a pyramid of (N, C_i, H_i, W_i, K_i) maps."""
    out = []
    for level_index, level in enumerate(pyramid):
        rows = torch.arange(height, device=level.device) >> level_index
        cols = torch.arange(width, device=level.device) >> level_index
        plane = level[..., middle >> level_index]  # (N, C_i, H_i, W_i)
        out.append(plane[:, :, rows][:, :, :, cols])
    return torch.cat(out, dim=1)


class VolumetricFeatures(nn.Module):
    """Frozen (or fine-tuned) 3D FPN -> voxel embeddings of the middle slice of each slab."""

    def __init__(self, backbone: nn.Module, out_channels: int, trainable: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.out_channels = out_channels
        for parameter in backbone.parameters():
            parameter.requires_grad_(trainable)
        self.trainable = trainable

    def train(self, mode: bool = True) -> VolumetricFeatures:
        super().train(mode)
        if not self.trainable:  # keep BatchNorm statistics of the pretrained backbone
            self.backbone.eval()
        return self

    def forward(self, slabs: torch.Tensor) -> torch.Tensor:
        _n, k, height, width = slabs.shape
        volume = slabs.permute(0, 2, 3, 1)[:, None]  # (N, 1, H, W, K): slice axis last
        return middle_slice_embeddings(self.backbone(volume), k // 2, height, width)


def load_volumetric_encoder(
    weights: Path, modality: str | None = None, trainable: bool = False
) -> VolumetricFeatures:
    """Rebuild a voxssl backbone from its weights file (plan checked) as a slice encoder."""

    expect: dict[str, Any] = {"architecture.in_channels": 1}
    if modality is not None:
        expect["preprocessing.modality"] = modality
    backbone, plan = load_backbone(weights, expect=expect)
    channels = sum(level_channels(plan.model_config(source=str(weights))))
    return VolumetricFeatures(backbone, channels, trainable)


__all__ = ["VolumetricFeatures", "load_volumetric_encoder", "middle_slice_embeddings"]
