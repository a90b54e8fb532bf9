"""Pretraining heads: the projector MLP of the contrastive loss and the reconstruction head."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from monai.networks.layers.utils import get_norm_layer
from torch import nn

from voxssl.config.model import NormSpec
from voxssl.models.blocks import apply_layers, conv_layer


class ProjectionHead(nn.Module):
    """MLP ``in -> hidden -> ... -> out`` (Linear-BN-ReLU between layers), L2-normalised output.

    "we first project [the voxel embeddings] to 128-length vectors using 3-layer fully-connected
    network and normalize the result" (seed 004, following SimCLR). vox2vec: 1008 -> 1008 -> 1008
    -> 128; hierarchical: 160 -> 160 -> 160 -> 128. Input ``(N, in_dim)``, output ``(N, out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int = 128,
        num_layers: int = 3,
        normalise: bool = True,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(d_in, d_out))
            if i < num_layers - 1:
                layers += [nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        self.normalise = normalise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(x)
        return F.normalize(x, dim=1) if self.normalise else x


class ReconstructionHead(nn.Module):
    """Predicts the clean image from the finest pyramid level ``(B, C_0, *S) -> (B, out, *S)``.

    ``conv1x1``: one 1x1x1 convolution (the public hierarchical-dense-ssl code).
    ``two_conv``: "a reconstruction head comprising two convolution layers" (seed 004 text):
    Norm-ReLU-Conv3x3x3 ``C_0 -> C_0/2``, Norm-ReLU-Conv1x1x1 ``C_0/2 -> out``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kind: str = "conv1x1",
        norm: NormSpec = "batch",
        spatial_dims: int = 3,
    ) -> None:
        super().__init__()
        if kind == "conv1x1":
            self.layers = nn.Sequential(
                conv_layer(spatial_dims, in_channels, out_channels, kernel_size=1)
            )
        elif kind == "two_conv":
            hidden = max(in_channels // 2, 1)
            self.layers = nn.Sequential(
                get_norm_layer(norm, spatial_dims=spatial_dims, channels=in_channels),
                nn.ReLU(inplace=True),
                conv_layer(spatial_dims, in_channels, hidden, kernel_size=3),
                get_norm_layer(norm, spatial_dims=spatial_dims, channels=hidden),
                nn.ReLU(inplace=True),
                conv_layer(spatial_dims, hidden, out_channels, kernel_size=1),
            )
        else:
            raise ValueError(f"unknown reconstruction head {kind!r} (conv1x1 or two_conv)")
        self.kind = kind

    def forward(self, finest_level: torch.Tensor, views: int = 1) -> torch.Tensor:
        """``views``: batch-norm statistics per view (see :mod:`voxssl.models.blocks`)."""
        return apply_layers(self.layers, finest_level, views)


__all__ = ["ProjectionHead", "ReconstructionHead"]
