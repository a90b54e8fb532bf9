"""The 3D feature pyramid network (FPN) of vox2vec: a U-Net whose decoder maps form the pyramid.

Layout (``c_i = base_channels * 2**i``, ``L = num_levels``)::

    first_conv            3x3x3 conv  in_channels -> c_0
    left_blocks[i]        residual stage at level i (i < L-1)         -> skip to the decoder
    down_blocks[i]        MaxPool 2 (ceil mode), 1x1x1 conv c_i -> c_{i+1}
    bottom_block          residual stage at level L-1                 -> pyramid[L-1]
    up_blocks[k]          1x1x1 conv c_{i+1} -> c_i, nearest x2, cropped to the skip's size
    skip_blocks[k]        1x1x1 conv c_i -> c_i on the encoder map, ADDED
    right_blocks[k]       residual stage at level i                   -> pyramid[i]

where decoder index ``k = L - 2 - i`` (``k = 0`` is the deepest decoder stage, as in vox2vec, so a
vox2vec state dict loads without renaming). Optional per-level projections (``projections[i]``)
map every pyramid level to one width (the balanced pyramid of the hierarchical preset).

A voxel ``v`` of the input is represented at level ``i`` by the feature at ``v // 2**i``; its
voxel embedding is the concatenation over levels (see :mod:`voxssl.models.gather`).

Speed knobs that never change the result beyond float rounding: ``views`` (several views in one
batch with batch-norm statistics per view, see :mod:`voxssl.models.blocks`) and
``channels_last_min_voxels`` (levels with at least that many voxels per sample run in
``channels_last_3d``, the others contiguous; ``None`` keeps whatever layout the input has). The
pretraining loop sets the latter per device (:mod:`voxssl.train.performance`).
"""

from __future__ import annotations

import math
from types import EllipsisType
from typing import TypeVar

import torch
from torch import nn

from voxssl.config.model import NormSpec
from voxssl.device import channels_last_min_voxels
from voxssl.models.blocks import (
    ResidualStage,
    conv_layer,
    down_block,
    is_channels_last,
    up_block,
)
from voxssl.models.projection import build_level_projections


class _GradientLayout(torch.autograd.Function):
    """Identity whose backward gives the gradient ``x``'s own memory layout."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.channels_last = is_channels_last(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        if ctx.channels_last:
            layout = torch.channels_last_3d if grad.ndim == 5 else torch.channels_last
            return grad.contiguous(memory_format=layout)
        return grad


class FPN(nn.Module):
    """Feature pyramid network; ``forward`` returns the (projected) pyramid, level 0 first.

    Args:
        in_channels: image channels.
        base_channels: channels of level 0; level i has ``base_channels * 2**i``.
        num_levels: pyramid levels (the input is pooled ``num_levels - 1`` times).
        blocks_per_stage: residual blocks per encoder stage, bottom and decoder stage.
        norm: MONAI norm spec, ``"batch"`` or ``("group", {"num_groups": 8})``...
        spatial_dims: 3 (volumes) or 2.
        projection: ``"none"``, ``"learned"`` or ``"frozen_random"`` per-level 1x1x1 projection.
        projection_channels: width of every projected level.
        projection_seed: seed of the frozen random projections.
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int,
        num_levels: int,
        blocks_per_stage: int = 2,
        norm: NormSpec = "batch",
        spatial_dims: int = 3,
        projection: str = "none",
        projection_channels: int = 32,
        projection_seed: int = 0,
    ) -> None:
        super().__init__()
        if num_levels < 1:
            raise ValueError(f"num_levels must be >= 1, got {num_levels}")
        self.in_channels = in_channels
        self.num_levels = num_levels
        self.spatial_dims = spatial_dims
        self.feature_channels = [base_channels * 2**i for i in range(num_levels)]

        def stage(channels: int) -> ResidualStage:
            return ResidualStage(channels, blocks_per_stage, norm, spatial_dims)

        encoder_levels = self.feature_channels[:-1]
        self.first_conv = conv_layer(spatial_dims, in_channels, base_channels, kernel_size=3)
        self.left_blocks = nn.ModuleList([stage(c) for c in encoder_levels])
        self.down_blocks = nn.ModuleList([down_block(spatial_dims, c) for c in encoder_levels])
        self.bottom_block = stage(self.feature_channels[-1])
        decoder_levels = encoder_levels[::-1]  # deepest first, like vox2vec
        self.up_blocks = nn.ModuleList([up_block(spatial_dims, c) for c in decoder_levels])
        self.skip_blocks = nn.ModuleList(
            [conv_layer(spatial_dims, c, c, kernel_size=1) for c in decoder_levels]
        )
        self.right_blocks = nn.ModuleList([stage(c) for c in decoder_levels])
        self.projections = build_level_projections(
            self.feature_channels, projection_channels, projection, spatial_dims, projection_seed
        )
        self.level_channels = (
            list(self.feature_channels)
            if self.projections is None
            else [projection_channels] * num_levels
        )
        self.channels_last_min_voxels: int | None = None

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory layout chosen for its level (a no-op without a policy)."""
        if self.channels_last_min_voxels is None:
            return x
        if math.prod(x.shape[2:]) < self.channels_last_min_voxels:
            return x.contiguous()
        layout = torch.channels_last_3d if x.ndim == 5 else torch.channels_last
        if x.shape[1] == 1 and x.stride(1) != 1:
            # one channel is contiguous in both layouts, so oneDNN would keep the next map
            # (many channels) contiguous: give the input explicit channels-last strides
            return torch.empty_like(x, memory_format=layout).copy_(x)
        return x.contiguous(memory_format=layout)

    @property
    def embedding_dim(self) -> int:
        """Width of the concatenated voxel embedding (sum of ``level_channels``)."""
        return sum(self.level_channels)

    def forward_features(self, x: torch.Tensor, views: int = 1) -> list[torch.Tensor]:
        """The decoder maps ``[(B, c_i, *ceil(S / 2**i)) for i in range(L)]``, before projection.

        ``views``: the batch holds that many equal chunks (views) whose batch-norm statistics are
        kept apart, as if each chunk went through its own forward pass."""
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"FPN expects (B, {self.in_channels}, *{self.spatial_dims} spatial dims), got {tuple(x.shape)}"
            )
        x = self.first_conv(self._layout(x))
        skips = []
        for left, down in zip(self.left_blocks, self.down_blocks, strict=True):
            x = _GradientLayout.apply(left(self._layout(x), views))
            skips.append(x)
            x = down(x)
        x = self.bottom_block(self._layout(x), views)
        pyramid = [x]
        for up, skip, right in zip(
            self.up_blocks, self.skip_blocks, self.right_blocks, strict=True
        ):
            encoder_map = skips.pop()
            x = up(x)
            crop: tuple[EllipsisType | slice, ...] = (
                ...,
                *(slice(0, n) for n in encoder_map.shape[2:]),
            )
            x = x[crop]  # odd sizes: drop the extra voxel
            x = right(self._layout(x + skip(encoder_map)), views)
            pyramid.insert(0, x)
        return pyramid

    def project(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """Apply the per-level projections (identity when the model has none)."""
        if self.projections is None:
            return list(features)
        return [
            projection(level) for projection, level in zip(self.projections, features, strict=True)
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The voxel-embedding pyramid: ``level_channels[i]`` channels at level i, level 0 first."""
        return self.project(self.forward_features(x))


ModuleT = TypeVar("ModuleT", bound=nn.Module)


def apply_memory_layout(model: ModuleT, device: torch.device) -> ModuleT:
    """Set the per-level memory layout of every FPN inside ``model`` for ``device``
    (:func:`voxssl.device.channels_last_min_voxels`); returns ``model``."""
    threshold = channels_last_min_voxels(device)
    for module in model.modules():
        if isinstance(module, FPN):
            module.channels_last_min_voxels = threshold
    return model


__all__ = ["FPN", "apply_memory_layout"]
