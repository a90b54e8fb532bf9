"""Building blocks of the FPN backbone, dimension-generic (2D or 3D) through MONAI's layer factories.

Sub-module names mirror vox2vec's (``layers`` inside a block, ``layers`` inside a stage) so that a
vox2vec state dict loads without renaming; see docs/models.md for the key layout.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from voxssl.config.model import NormSpec


def conv_layer(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True
) -> nn.Module:
    """A ``kernel_size`` convolution with 'same' padding (odd kernels)."""
    return Conv[Conv.CONV, spatial_dims](
        in_channels, out_channels, kernel_size=kernel_size, padding=kernel_size // 2, bias=bias
    )


class PreActivationResidualBlock(nn.Module):
    """``x + Conv(ReLU(Norm(Conv(ReLU(Norm(x))))))`` with 3x3x3 convolutions (pre-activation ResNet).

    Keys: ``layers.0`` norm, ``layers.2`` conv, ``layers.3`` norm, ``layers.5`` conv (1, 4: ReLU).
    """

    def __init__(
        self, channels: int, norm: NormSpec = "batch", spatial_dims: int = 3, kernel_size: int = 3
    ) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            get_norm_layer(norm, spatial_dims=spatial_dims, channels=channels),
            nn.ReLU(inplace=True),
            conv_layer(spatial_dims, channels, channels, kernel_size),
            get_norm_layer(norm, spatial_dims=spatial_dims, channels=channels),
            nn.ReLU(inplace=True),
            conv_layer(spatial_dims, channels, channels, kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class ResidualStage(nn.Module):
    """``num_blocks`` residual blocks at one resolution (keys ``layers.<j>.layers.*``)."""

    def __init__(
        self, channels: int, num_blocks: int, norm: NormSpec = "batch", spatial_dims: int = 3
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [PreActivationResidualBlock(channels, norm, spatial_dims) for _ in range(num_blocks)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layers:
            x = block(x)
        return x


def down_block(spatial_dims: int, channels: int) -> nn.Sequential:
    """MaxPool 2 (ceil mode: odd sizes keep their last voxel), then a 1x1x1 conv c -> 2c (key ``1``)."""
    return nn.Sequential(
        Pool[Pool.MAX, spatial_dims](kernel_size=2, ceil_mode=True),
        conv_layer(spatial_dims, channels, 2 * channels, kernel_size=1),
    )


def up_block(spatial_dims: int, channels: int) -> nn.Sequential:
    """A 1x1x1 conv 2c -> c (key ``0``), then nearest-neighbour upsampling x2."""
    return nn.Sequential(
        conv_layer(spatial_dims, 2 * channels, channels, kernel_size=1),
        nn.Upsample(scale_factor=2, mode="nearest"),
    )


__all__ = ["PreActivationResidualBlock", "ResidualStage", "conv_layer", "down_block", "up_block"]
