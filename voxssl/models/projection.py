"""Per-level 1x1x1 projections of the pyramid to one width ("balanced pyramid", seed 004).

Level ``i`` (``base * 2**i`` channels) is mapped to ``out_channels`` before the levels are
concatenated, so the full-resolution level weighs as much in the voxel embedding as the coarsest.
As in the published code, only level 0 has a bias.

``frozen_random`` reproduces the published code, where the projections sat in a plain Python list
and were therefore never trained and never saved. In voxssl they are drawn from a seeded generator
and registered as *buffers*: they are not trained, but they are saved with the weights, so a
checkpoint is complete and a rebuilt model gives the same embedding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from voxssl.models.blocks import conv_layer


class FrozenRandomProjection(nn.Module):
    """A fixed random 1x1x1 convolution (buffers ``weight`` and ``bias``, no parameters).

    Drawn like PyTorch's default conv initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from
    ``torch.Generator().manual_seed(seed)``: the same seed gives the same projection everywhere.
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(
        self, in_channels: int, out_channels: int, spatial_dims: int, seed: int, bias: bool
    ) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        bound = 1.0 / math.sqrt(in_channels)
        shape = (out_channels, in_channels) + (1,) * spatial_dims
        weight = (torch.rand(shape, generator=generator, device="cpu") * 2 - 1) * bound
        self.register_buffer("weight", weight)
        if bias:
            self.register_buffer(
                "bias",
                (torch.rand(out_channels, generator=generator, device="cpu") * 2 - 1) * bound,
            )
        else:
            self.bias = None
        self.spatial_dims = spatial_dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv3d if self.spatial_dims == 3 else F.conv2d
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return conv(x, self.weight.to(x.dtype), bias)


def build_level_projections(
    level_channels: list[int], out_channels: int, kind: str, spatial_dims: int = 3, seed: int = 0
) -> nn.ModuleList | None:
    """One 1x1x1 projection per level (``None`` for ``kind == "none"``); bias on level 0 only."""
    if kind == "none":
        return None
    if kind == "learned":
        return nn.ModuleList(
            [
                conv_layer(spatial_dims, c, out_channels, kernel_size=1, bias=(i == 0))
                for i, c in enumerate(level_channels)
            ]
        )
    if kind == "frozen_random":
        return nn.ModuleList(
            [
                FrozenRandomProjection(
                    c, out_channels, spatial_dims, seed=seed * 1000 + i, bias=(i == 0)
                )
                for i, c in enumerate(level_channels)
            ]
        )
    raise ValueError(f"unknown projection kind {kind!r} (none, learned or frozen_random)")


__all__ = ["FrozenRandomProjection", "build_level_projections"]
