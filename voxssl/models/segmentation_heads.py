"""Segmentation heads on a feature pyramid.

Shapes: the pyramid is a list of L tensors, level i of shape (B, C_i, X_i, Y_i, Z_i) with
X_i = ceil(X / 2^i) (max-pooling in ceil mode), level 0 at the input resolution. A voxel v of the
input reads level i at v // 2^i ("select from pyramid"), i.e. nearest-neighbour upsampling by 2^i
followed by a crop to (X, Y, Z).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import nn


def upsample_to(x: torch.Tensor, level: int, size: Sequence[int]) -> torch.Tensor:
    """Nearest upsampling of a level-``level`` map by 2^level, cropped to ``size`` (X, Y, Z)."""
    if level == 0:
        return x[..., : size[0], : size[1], : size[2]]
    factor = 2**level
    for dim in (2, 3, 4):
        x = x.repeat_interleave(factor, dim=dim)
    return x[..., : size[0], : size[1], : size[2]]


class FPNLinearHead(nn.Module):
    """vox2vec's linear probe (seed 004: "Each pyramid level is separately fed to a dedicated
    convolutional layer with kernel size 1 which maps the number of channels to the number of
    classes. Subsequently, all the outputs are up-sampled to the full resolution and summed up.").

    Only level 0 has a bias (the others would add constants to the same logits). The sum is exactly
    ``W @ concat_i(upsample(level_i)) + b``: a linear map of the concatenated voxel embedding.

    ``feature_norm="batch"`` standardises every embedding channel first (a BatchNorm without
    affine parameters, as in MAE's linear probe). In eval mode it is a fixed per-channel affine map,
    so the head is still one linear map of the embedding (:meth:`as_linear_map` folds it in); it
    only makes the probe's optimisation independent of the feature scale, which differs by orders
    of magnitude between a randomly initialised and a pretrained backbone.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, feature_norm: str = "none"
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.level_norms = level_feature_norms(self.in_channels, feature_norm)
        self.level_convs = nn.ModuleList(
            nn.Conv3d(c, num_classes, kernel_size=1, bias=(i == 0))
            for i, c in enumerate(self.in_channels)
        )

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_pyramid(pyramid, self.in_channels)
        pyramid = normalise_levels(pyramid, self.level_norms)
        size = pyramid[0].shape[2:]
        logits = self.level_convs[0](pyramid[0])
        for level in range(1, len(pyramid)):
            # conv before upsampling: identical result (1x1x1 conv commutes with nearest), 8^i cheaper
            logits = logits + upsample_to(self.level_convs[level](pyramid[level]), level, size)
        return logits

    def as_linear_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) with W (num_classes, sum C_i) acting on the concatenated embedding (eval mode)."""
        convs = [cast(nn.Conv3d, conv) for conv in self.level_convs]
        if convs[0].bias is None:
            raise ValueError("level 0 of an FPNLinearHead holds the bias, this one has none")
        weights, bias = [], convs[0].bias.detach().clone()
        for level, conv in enumerate(convs):
            weight = conv.weight.detach().flatten(1)  # (K, C_i)
            if self.level_norms is not None:
                norm = cast(nn.BatchNorm3d, self.level_norms[level])
                mean, var = norm.running_mean, norm.running_var
                if mean is None or var is None:
                    raise ValueError("feature_norm without running statistics has no linear map")
                scale = torch.rsqrt(var + norm.eps)  # (C_i,)
                bias = bias - weight @ (mean * scale)
                weight = weight * scale
            weights.append(weight)
        return torch.cat(weights, dim=1), bias


def level_feature_norms(in_channels: Sequence[int], kind: str) -> nn.ModuleList | None:
    """Per-level channel standardisation of the frozen features: ``none`` or ``batch``."""
    if kind == "none":
        return None
    if kind == "batch":
        # momentum=None: running statistics are the plain average over all training batches (the
        # frozen features are stationary), exact from the first batch on whatever their scale
        return nn.ModuleList(nn.BatchNorm3d(c, affine=False, momentum=None) for c in in_channels)
    raise ValueError(f"unknown head feature_norm {kind!r} (none | batch)")


def normalise_levels(
    pyramid: Sequence[torch.Tensor], norms: nn.ModuleList | None
) -> Sequence[torch.Tensor]:
    if norms is None:
        return pyramid
    return [norm(level) for norm, level in zip(norms, pyramid, strict=True)]


class PointwiseResidualBlock(nn.Module):
    """Pre-activation residual block of 1x1x1 convs: x + conv(relu(bn(conv(relu(bn(x))))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, kernel_size=1),
            nn.BatchNorm3d(channels),
            nn.ReLU(inplace=False),
            nn.Conv3d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class FPNNonLinearHead(nn.Module):
    """Non-linear head: a coarse-to-fine decoder of 1x1x1 residual blocks.

    Each level is projected to ``hidden`` channels; starting from the coarsest, the running map is
    upsampled x2, added to the next finer projection and passed through ``blocks_per_level``
    residual blocks; a final BN-ReLU-1x1x1 conv gives the logits at full resolution. No spatial
    kernels: every voxel is still classified from its own pyramid embedding only.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        hidden: int = 128,
        blocks_per_level: int = 1,
        feature_norm: str = "none",
    ):
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.level_norms = level_feature_norms(self.in_channels, feature_norm)
        self.projections = nn.ModuleList(
            nn.Conv3d(c, hidden, kernel_size=1) for c in self.in_channels
        )
        self.merge_blocks = nn.ModuleList(
            nn.Sequential(*(PointwiseResidualBlock(hidden) for _ in range(blocks_per_level)))
            for _ in self.in_channels
        )
        self.classifier = nn.Sequential(
            nn.BatchNorm3d(hidden),
            nn.ReLU(inplace=False),
            nn.Conv3d(hidden, num_classes, kernel_size=1),
        )

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_pyramid(pyramid, self.in_channels)
        pyramid = normalise_levels(pyramid, self.level_norms)
        x = self.merge_blocks[-1](self.projections[-1](pyramid[-1]))
        for level in range(len(pyramid) - 2, -1, -1):
            x = upsample_to(x, 1, pyramid[level].shape[2:]) + self.projections[level](
                pyramid[level]
            )
            x = self.merge_blocks[level](x)
        return self.classifier(x)


class Vox2VecNonLinearHead(nn.Module):
    """vox2vec's non-linear head (``FPNNonLinearHead``, also in hierarchical-dense-ssl): a decoder
    at the pyramid's own widths. From the coarsest level: a 1x1x1 residual block; then per finer
    level: 1x1x1 conv ``c_{i+1} -> c_i`` + nearest x2 (cropped), plus a 1x1x1 conv of the level
    (skip), then a 1x1x1 residual block; a final 1x1x1 conv ``c_0 -> classes``. Keys follow the
    published module (``bottom_block``, ``up_blocks.k``, ``skip_blocks.k``, ``right_blocks.k``,
    ``final_block``; ``k = 0`` is the deepest decoder stage), so its weights load unchanged.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, feature_norm: str = "none"
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_classes = num_classes
        self.level_norms = level_feature_norms(self.in_channels, feature_norm)
        finer = self.in_channels[:-1][::-1]  # decoder order: deepest first
        coarser = self.in_channels[1:][::-1]
        self.bottom_block = PointwiseResidualBlock(self.in_channels[-1])
        self.up_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv3d(c_in, c, kernel_size=1), nn.Upsample(scale_factor=2))
            for c_in, c in zip(coarser, finer, strict=True)
        )
        self.skip_blocks = nn.ModuleList(nn.Conv3d(c, c, kernel_size=1) for c in finer)
        self.right_blocks = nn.ModuleList(PointwiseResidualBlock(c) for c in finer)
        self.final_block = nn.Conv3d(self.in_channels[0], num_classes, kernel_size=1)

    def forward(self, pyramid: Sequence[torch.Tensor]) -> torch.Tensor:
        _check_pyramid(pyramid, self.in_channels)
        pyramid = normalise_levels(pyramid, self.level_norms)
        x = self.bottom_block(pyramid[-1])
        for k, level in enumerate(range(len(pyramid) - 2, -1, -1)):
            skip = pyramid[level]
            x = self.up_blocks[k](x)[..., : skip.shape[2], : skip.shape[3], : skip.shape[4]]
            x = self.right_blocks[k](x + self.skip_blocks[k](skip))
        return self.final_block(x)


def build_head(
    kind: str,
    in_channels: Sequence[int],
    num_classes: int,
    hidden: int = 128,
    blocks_per_level: int = 1,
    feature_norm: str = "none",
) -> nn.Module:
    """The head named by a recipe's ``head.kind``."""
    if kind == "linear":
        return FPNLinearHead(in_channels, num_classes, feature_norm=feature_norm)
    if kind == "nonlinear":
        return FPNNonLinearHead(
            in_channels,
            num_classes,
            hidden=hidden,
            blocks_per_level=blocks_per_level,
            feature_norm=feature_norm,
        )
    if kind == "vox2vec_nonlinear":
        return Vox2VecNonLinearHead(in_channels, num_classes, feature_norm=feature_norm)
    raise ValueError(f"unknown head kind {kind!r} (linear | nonlinear | vox2vec_nonlinear)")


def _check_pyramid(pyramid: Sequence[torch.Tensor], in_channels: list[int]) -> None:
    got = [p.shape[1] for p in pyramid]
    if got != in_channels:
        raise ValueError(f"head expects pyramid channels {in_channels}, got {got}")


__all__ = [
    "FPNLinearHead",
    "FPNNonLinearHead",
    "PointwiseResidualBlock",
    "Vox2VecNonLinearHead",
    "build_head",
    "upsample_to",
]
