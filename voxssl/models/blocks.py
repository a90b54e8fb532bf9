"""Building blocks of the FPN backbone, dimension-generic (2D or 3D) through MONAI's layer factories.

Sub-module names mirror vox2vec's (``layers`` inside a block, ``layers`` inside a stage) so that a
vox2vec state dict loads without renaming; see docs/models.md for the key layout.

Several views in one batch (``views > 1``): the batch holds ``views`` equal chunks (view 1's
samples, then view 2's, ...) and every batch norm computes its statistics, and updates its running
statistics, chunk by chunk, in that order: exactly what ``views`` separate forward passes compute,
while every convolution runs once on the whole batch (one larger, faster kernel instead of
several small ones). Norms without batch statistics (instance, group, layer) need no split.
On the CPU the views' batch norms write into one output (and their backward into one input
gradient) through :class:`PerViewBatchNorm`: no concatenation of the views' outputs.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from voxssl.config.model import NormSpec


class PerViewBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of each of ``views`` equal batch chunks, written into one output
    tensor (forward) and one input gradient (backward) by ATen's own batch-norm kernels
    (``native_batch_norm.out``, ``native_batch_norm_backward.out``): the numbers of
    ``torch.cat([bn(chunk) for chunk in x.chunk(views)])`` without the forward concatenation (a
    copy of the whole map; ``native_batch_norm.out`` writes in place). The backward kernel has
    no native ``out=`` form, so ATen still copies each chunk's gradient in, as the chunks'
    gradient reassembly did. The running statistics are updated chunk by chunk, in order, with
    each chunk's ``factors[v]``."""

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        running_mean: torch.Tensor | None,
        running_var: torch.Tensor | None,
        views: int,
        factors: tuple[float, ...],
        eps: float,
    ) -> torch.Tensor:
        out = torch.empty_like(x)
        mean = x.new_empty(views, x.shape[1])
        invstd = x.new_empty(views, x.shape[1])
        for v, (chunk, chunk_out) in enumerate(zip(x.chunk(views), out.chunk(views), strict=True)):
            torch.ops.aten.native_batch_norm.out(
                chunk, weight, bias, running_mean, running_var, True, factors[v], eps,
                out=chunk_out, save_mean=mean[v], save_invstd=invstd[v],
            )  # fmt: skip
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.views, ctx.eps = views, eps
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, mean, invstd = ctx.saved_tensors
        views: int = ctx.views
        affine = weight is not None
        # the .out kernel fills all three gradients: without an affine, a unit scale (unused)
        if not affine:
            weight = x.new_ones(x.shape[1])
        grad_x = torch.empty_like(x)
        grad_weight = x.new_empty(views, x.shape[1])
        grad_bias = x.new_empty(views, x.shape[1])
        for v, (chunk, chunk_grad, chunk_grad_x) in enumerate(
            zip(x.chunk(views), grad_out.chunk(views), grad_x.chunk(views), strict=True)
        ):
            torch.ops.aten.native_batch_norm_backward.out(
                chunk_grad, chunk, weight, None, None, mean[v], invstd[v], True, ctx.eps,
                [True, True, True], out0=chunk_grad_x, out1=grad_weight[v], out2=grad_bias[v],
            )  # fmt: skip
        if not affine:
            return grad_x, None, None, None, None, None, None, None
        return grad_x, grad_weight.sum(0), grad_bias.sum(0), None, None, None, None, None


def _writes_in_place(layer: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> bool:
    """Whether :class:`PerViewBatchNorm` computes ``layer`` on ``x``: an ordinary (not
    synchronised) batch norm on a CPU tensor of its parameters' dtype, outside torch.compile
    (which traces the concatenation and fuses what it can)."""
    return (
        type(layer) in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
        and x.device.type == "cpu"
        and (layer.weight is None or layer.weight.dtype == x.dtype)
        and not torch.compiler.is_compiling()
    )


def _per_view_factors(layer: nn.modules.batchnorm._BatchNorm, views: int) -> tuple[float, ...]:
    """The running-average factor of each of ``views`` successive calls of ``layer`` (counting
    them in ``num_batches_tracked``), as ``nn.BatchNorm``'s forward computes it call by call."""
    factors = []
    for _ in range(views):
        factor = 0.0 if layer.momentum is None else layer.momentum
        if layer.training and layer.track_running_stats and layer.num_batches_tracked is not None:
            layer.num_batches_tracked.add_(1)
            if layer.momentum is None:  # cumulative moving average
                factor = 1.0 / float(layer.num_batches_tracked)
        factors.append(factor)
    return tuple(factors)


def per_view(layer: nn.Module, x: torch.Tensor, views: int = 1) -> torch.Tensor:
    """``layer(x)``, with a training-mode batch norm applied to each of the ``views`` chunks of the
    batch separately (see the module docstring); other layers see the whole batch."""
    if (
        views > 1
        and isinstance(layer, nn.modules.batchnorm._BatchNorm)
        and (layer.training or not layer.track_running_stats)
    ):
        if x.shape[0] % views:
            raise ValueError(f"a batch of {x.shape[0]} does not split into {views} equal views")
        if not _writes_in_place(layer, x):
            return torch.cat([layer(chunk) for chunk in x.chunk(views)])
        layer._check_input_dim(x)
        tracked = layer.track_running_stats
        out: torch.Tensor = PerViewBatchNorm.apply(
            x,
            layer.weight,
            layer.bias,
            layer.running_mean if tracked else None,
            layer.running_var if tracked else None,
            views,
            _per_view_factors(layer, views),
            layer.eps,
        )
        return out
    return layer(x)


def apply_layers(layers: nn.Sequential, x: torch.Tensor, views: int = 1) -> torch.Tensor:
    """``layers(x)`` with batch-norm statistics per view (:func:`per_view`)."""
    for layer in layers:
        x = per_view(layer, x, views)
    return x


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4D/5D ``x`` is laid out channels-last and not also plain contiguous (one channel
    or one voxel per sample is both: such a map counts as contiguous)."""
    if x.ndim not in (4, 5) or x.is_contiguous():
        return False
    return x.is_contiguous(
        memory_format=torch.channels_last_3d if x.ndim == 5 else torch.channels_last
    )


class _PointwiseConv(nn.Module):
    """A 1x1(x1) convolution that runs a channels-last map as one matrix product over the
    channels (``(B*S, C_in) @ W^T``): the same sums as the convolution, with no layout copy in
    either direction and its output (and its input's gradient) channels-last. PyTorch's CPU
    convolution sends 1x1 kernels at small batches on one thread to its reference kernel, which
    first copies a channels-last map to contiguous and writes a contiguous output. Contiguous
    maps take the ordinary convolution. State-dict keys and weight shapes are the convolution's."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_channels_last(x):
            weight = self.weight.flatten(1)
            return F.linear(x.movedim(1, -1), weight, self.bias).movedim(-1, 1)
        return super().forward(x)  # the convolution's (next in the MRO)


class PointwiseConv3d(_PointwiseConv, nn.Conv3d):
    """:class:`_PointwiseConv` for volumes."""


class PointwiseConv2d(_PointwiseConv, nn.Conv2d):
    """:class:`_PointwiseConv` for images."""


# A 3x3x3 convolution runs as one matrix product over its patches (im2col) on the CPU when its
# weight dwarfs its input: at most ``out_channels / SMALL_MAP_ROWS_PER_CHANNEL`` output voxels in
# the batch. The deepest FPN levels (512 channels on 2x2x1 to 4x4x2 voxels) are such maps: oneDNN
# spends its time there reordering the 7 M-element weight and its gradient (fwd + bwd 67 ms vs
# 17.5 ms for 2 x 512 x 2x2x1, 69 vs 55 ms for 2 x 512 x 4x4x2, one thread); from 256 channels on
# 4x4x2 the convolution is faster again (the pretraining throughput section of benchmarks/README.md).
SMALL_MAP_ROWS_PER_CHANNEL = 8


class SmallMapConv3d(nn.Conv3d):
    """A 3x3x3 'same' convolution that computes small CPU maps as patches @ weight (the same
    sums, another order); every other input takes ``nn.Conv3d``. Keys and shapes: a Conv3d's."""

    def uses_patches(self, x: torch.Tensor) -> bool:
        rows = x.shape[0] * x.shape[2] * x.shape[3] * x.shape[4]
        return x.device.type == "cpu" and rows * SMALL_MAP_ROWS_PER_CHANNEL <= self.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or not self.uses_patches(x):
            return super().forward(x)
        n, _, d, h, w = x.shape
        padded = F.pad(x, (1, 1, 1, 1, 1, 1))
        patches = torch.stack(
            [
                padded[:, :, i : i + d, j : j + h, k : k + w]
                for i in range(3)
                for j in range(3)
                for k in range(3)
            ],
            dim=-1,
        )  # (N, C, D, H, W, 27): the weight's (C, kd, kh, kw) order once flattened per voxel
        rows = patches.permute(0, 2, 3, 4, 1, 5).reshape(n * d * h * w, -1)
        out = F.linear(rows, self.weight.flatten(1), self.bias)
        return out.view(n, d, h, w, -1).permute(0, 4, 1, 2, 3).contiguous()


def conv_layer(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True
) -> nn.Module:
    """A ``kernel_size`` convolution with 'same' padding (odd kernels); 1x1(x1) kernels run a
    channels-last input as a matrix product (:class:`PointwiseConv3d`), 3x3x3 kernels small CPU
    maps as patches @ weight (:class:`SmallMapConv3d`)."""
    if kernel_size == 1 and spatial_dims in (2, 3):
        pointwise = PointwiseConv3d if spatial_dims == 3 else PointwiseConv2d
        return pointwise(in_channels, out_channels, kernel_size=1, bias=bias)
    if kernel_size == 3 and spatial_dims == 3:
        return SmallMapConv3d(in_channels, out_channels, kernel_size=3, padding=1, bias=bias)
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

    def forward(self, x: torch.Tensor, views: int = 1) -> torch.Tensor:
        return x + apply_layers(self.layers, x, views)


class ResidualStage(nn.Module):
    """``num_blocks`` residual blocks at one resolution (keys ``layers.<j>.layers.*``)."""

    def __init__(
        self, channels: int, num_blocks: int, norm: NormSpec = "batch", spatial_dims: int = 3
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [PreActivationResidualBlock(channels, norm, spatial_dims) for _ in range(num_blocks)]
        )

    def forward(self, x: torch.Tensor, views: int = 1) -> torch.Tensor:
        for block in self.layers:
            x = block(x, views)
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


__all__ = [
    "SMALL_MAP_ROWS_PER_CHANNEL",
    "PerViewBatchNorm",
    "PointwiseConv2d",
    "PointwiseConv3d",
    "PreActivationResidualBlock",
    "ResidualStage",
    "SmallMapConv3d",
    "apply_layers",
    "conv_layer",
    "down_block",
    "is_channels_last",
    "per_view",
    "up_block",
]
