"""The DINO / iBOT projection head: an MLP to a bottleneck, L2 normalisation, and a weight-normalised
linear layer whose rows are the ``K`` prototypes.

"The DINO head is a 3-layer MLP with hidden dimension 2048 followed by l2 normalization and a
weight normalized fully connected layer with K dimensions" (Caron et al., 2021; DINOv2 keeps it with
K = 65536 or 131072 and a bottleneck of 256 or 384)::

    x (N, D) -> Linear D->H, GELU, [Linear H->H, GELU] x (layers - 2), Linear H->bottleneck
             -> x / ||x||_2 -> W x,   W = g v / ||v||  (per row: a prototype of norm g)  -> (N, K)

The MLP weights start from a truncated normal (std 0.02) with zero biases; the prototypes' norms
``g`` start at 1 (so the initial scores are cosine similarities) and are trained, as in DINOv2.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """Args: ``in_dim`` D (the ViT width), ``num_prototypes`` K, ``hidden_dim`` H,
    ``bottleneck_dim``, ``num_layers`` (>= 1; 1 = a single Linear D -> bottleneck)."""

    def __init__(
        self,
        in_dim: int,
        num_prototypes: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for index, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
            layers.append(nn.Linear(d_in, d_out))
            if index < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, num_prototypes, bias=False))
        with torch.no_grad():
            self.last_layer.parametrizations.weight.original0.fill_(1.0)  # g: prototype norms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, K)."""
        x = self.mlp(x)
        eps = 1e-6 if x.dtype in (torch.float16, torch.bfloat16) else 1e-12
        return self.last_layer(F.normalize(x, dim=-1, p=2, eps=eps))


__all__ = ["DINOHead"]
