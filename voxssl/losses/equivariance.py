"""Pix2Rep-style equivariance loss in 3D (seed 003): ``f(T(x))`` against ``T(f(x))``.

Two views of one crop, ``x1`` and ``x2`` (different intensity augmentations), and an exact grid
transform ``T`` (:class:`voxssl.transforms.spatial.GridTransform`). The backbone sees ``x1`` and
``T(x2)``. For ``N`` positions ``p`` sampled on the grid of ``T(x2)``::

    a_i = g(E(f(T(x2)), p_i))              (N, D') embeddings of the transformed view
    b_i = g(E(f(x1), T^-1(p_i)))           (N, D') = g(E(T(f(x1)), p_i)), exactly
    L   = NT-Xent(a, b; tau)               symmetric, negatives = all other sampled positions

where ``E(pyramid, p)`` gathers the concatenated multi-level embedding at full-resolution voxels
(:func:`voxssl.models.gather.gather_voxel_embeddings`), ``g`` is an optional projector (Pix2Rep:
1024 -> 256 -> 256) and ``T^-1`` is ``T.source_points``. Gathering ``f(x1)`` at ``T^-1(p)`` equals
gathering the transformed pyramid ``T(f(x1))`` at ``p`` on every level whenever ``T`` is exact
there, and stays exact where it is not (odd sizes), so no feature map is resampled. An
equivariant ``f`` makes ``a_i == b_i`` (only the negatives remain in the loss); a non-equivariant
one does not. Pix2Rep: tau = 0.53, 1000 positions per image. Shapes: pyramids
``[(B, C_l, *S_l)]``; positions ``(N, 1 + 3)`` = (batch index, x, y, z) on ``T(x2)``'s grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from voxssl.losses.infonce import InfoNCELoss
from voxssl.models.gather import gather_voxel_embeddings
from voxssl.transforms.spatial import GridTransform


class EquivarianceLoss(nn.Module):
    """NT-Xent between ``f(T(x))`` and ``T(f(x))`` at the same sampled positions.

    Args:
        temperature: NT-Xent temperature (Pix2Rep: 0.53).
        projector: optional module ``(N, D) -> (N, D')`` applied to both sides (trainable, it is
            registered as a sub-module).
        gather_distributed: negatives from every DDP rank (see :class:`InfoNCELoss`).
    """

    def __init__(
        self,
        temperature: float = 0.1,
        projector: nn.Module | None = None,
        gather_distributed: bool = False,
    ) -> None:
        super().__init__()
        self.contrast = InfoNCELoss(
            temperature, normalise=True, gather_distributed=gather_distributed
        )
        self.projector = projector

    def forward(
        self,
        pyramid_of_transformed: Sequence[torch.Tensor],
        pyramid: Sequence[torch.Tensor],
        transforms: GridTransform | Sequence[GridTransform],
        positions: torch.Tensor,
        projector: nn.Module | None = None,
    ) -> torch.Tensor:
        """Args:
            pyramid_of_transformed: ``f(T(x2))``, level 0 first.
            pyramid: ``f(x1)``, level 0 first.
            transforms: one ``GridTransform`` for the whole batch, or one per batch item.
            positions: ``(N, 1 + dims)`` voxels (batch index first) on the grid of ``T(x2)``.
            projector: a projector for this call (e.g. one shared with InfoNCE); overrides the
                constructor's.
        Returns:
            a scalar loss.
        """
        sources = source_positions(transforms, positions)
        transformed = gather_voxel_embeddings(pyramid_of_transformed, positions)  # (N, D)
        reference = gather_voxel_embeddings(pyramid, sources)  # (N, D)
        projector = projector if projector is not None else self.projector
        if projector is not None:
            transformed, reference = projector(transformed), projector(reference)
        return self.contrast(transformed, reference)


def source_positions(
    transforms: GridTransform | Sequence[GridTransform], positions: torch.Tensor
) -> torch.Tensor:
    """``T_b^-1(p)`` for every row ``(b, p)``; ``transforms`` is one transform or one per batch item."""
    if not isinstance(transforms, Sequence):
        return transforms.source_points(positions)
    sources = positions.clone()
    batch = positions[:, 0]
    for b, transform in enumerate(transforms):
        rows = (batch == b).nonzero().squeeze(1)
        if rows.numel():
            sources[rows] = transform.source_points(positions[rows])
    return sources


def equivariance_alignment(
    pyramid_of_transformed: Sequence[torch.Tensor],
    pyramid: Sequence[torch.Tensor],
    transforms,
    positions: torch.Tensor,
) -> torch.Tensor:
    """Diagnostic: mean cosine distance ``1 - cos(a_i, b_i)`` of the positive pairs (0 when equivariant)."""
    a = gather_voxel_embeddings(pyramid_of_transformed, positions)
    b = gather_voxel_embeddings(pyramid, source_positions(transforms, positions))
    return (1 - torch.nn.functional.cosine_similarity(a, b, dim=1)).mean()


__all__ = ["EquivarianceLoss", "equivariance_alignment", "source_positions"]
