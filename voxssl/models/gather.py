"""Voxel embeddings from a feature pyramid, without upsampling the coarse levels.

A full-resolution voxel ``v`` is represented at level ``i`` by the feature at ``v // 2**i`` (the
cell of the ceil-mode pooled grid that contains it). Indexing each level directly costs
O(N * D) memory instead of O(B * D * X * Y * Z) for upsample-then-index.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from voxssl.models.blocks import is_channels_last


def gather_level(level: torch.Tensor, coords: torch.Tensor, level_index: int) -> torch.Tensor:
    """Features ``(N, C)`` of one level ``(B, C, *S_i)`` at full-resolution coords ``(N, 1 + dims)``."""
    batch = coords[:, 0]
    cells = coords[:, 1:] >> level_index  # floor division by 2**level_index (coords are >= 0)
    if is_channels_last(level):
        # index the channels-last map as (B, *S, C): contiguous rows, and the backward's
        # gradient keeps the map's layout (a contiguous one would slow every conv backward)
        voxels: tuple[torch.Tensor, ...] = (batch, *cells.unbind(dim=1))
        return level.movedim(1, -1)[voxels]
    index: tuple[Any, ...] = (batch, slice(None), *cells.unbind(dim=1))
    return level[index]  # advanced indices around a slice: the indexed dim comes first -> (N, C)


def gather_voxel_embeddings(
    pyramid: Sequence[torch.Tensor], coords: torch.Tensor, validate: bool = True
) -> torch.Tensor:
    """Concatenated multi-level embeddings of the voxels ``coords``.

    Args:
        pyramid: ``[(B, C_i, *S_i)]``, level 0 at full resolution ``S``, level i at ``ceil(S / 2**i)``.
        coords: ``(N, 1 + dims)`` integer tensor ``(batch index, x, y, z)`` of full-resolution voxels.
        validate: check that every coordinate lies inside level 0 (one device sync; pass False in
            a hot loop whose coordinates are known to be valid).

    Returns:
        ``(N, sum_i C_i)`` embeddings, level 0 channels first.
    """
    if not pyramid:
        raise ValueError("empty pyramid")
    full = pyramid[0]
    dims = full.ndim - 2
    if coords.ndim != 2 or coords.shape[1] != 1 + dims:
        raise ValueError(
            f"coords must be (N, {1 + dims}) = (batch, *spatial), got {tuple(coords.shape)}"
        )
    if coords.dtype.is_floating_point or coords.dtype == torch.bool:
        raise ValueError(f"coords must be an integer tensor, got {coords.dtype}")
    coords = coords.to(device=full.device, dtype=torch.long)
    if validate and coords.numel():
        upper = torch.tensor((full.shape[0], *full.shape[2:]), device=coords.device)
        if bool(((coords < 0) | (coords >= upper)).any()):
            raise IndexError(f"coords outside the batch/grid {tuple(upper.tolist())}")
    return torch.cat([gather_level(level, coords, i) for i, level in enumerate(pyramid)], dim=1)


__all__ = ["gather_level", "gather_voxel_embeddings"]
