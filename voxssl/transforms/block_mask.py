"""iBOT block masking (BEiT's blockwise masking, as DINOv2 samples it) on the patch grid.

One mask: rectangles of patches are added until ``num_to_mask`` patches are covered. Each
rectangle has an area drawn uniformly in ``[min_patches, budget]`` (budget: what is left, at most
``max_patches``) and an aspect ratio log-uniform in ``[min_aspect, 1 / min_aspect]``; a rectangle is
accepted when it adds between 1 and ``budget`` new patches; after ``attempts`` refused draws the
mask is returned as it is (it may hold fewer patches than asked, as in the authors' code).

One batch (:func:`sample_batch_masks`): of the ``I`` global crops, ``int(I * probability)`` are
masked, crop ``i`` of them with a ratio drawn uniformly in the i-th of equal sub-intervals of
``ratio_range`` (so a batch spans the whole range), the others not at all; the masks are then
shuffled over the crops. Every draw comes from the given ``numpy.random.Generator``.
"""

from __future__ import annotations

import math

import numpy as np


class BlockMaskGenerator:
    """Args: ``grid`` (rows, columns) of patches; ``min_patches`` of a rectangle (4);
    ``max_patches`` of a rectangle (default half the grid); ``min_aspect`` (0.3)."""

    def __init__(
        self,
        grid: tuple[int, int],
        min_patches: int = 4,
        max_patches: int | None = None,
        min_aspect: float = 0.3,
        attempts: int = 10,
    ) -> None:
        self.height, self.width = int(grid[0]), int(grid[1])
        self.num_patches = self.height * self.width
        self.min_patches = min_patches
        self.max_patches = int(0.5 * self.num_patches) if max_patches is None else max_patches
        self.log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
        self.attempts = attempts

    def __call__(self, num_to_mask: int, rng: np.random.Generator) -> np.ndarray:
        """(rows, columns) bool mask with about ``num_to_mask`` patches set."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        covered = 0
        while covered < num_to_mask:
            budget = min(num_to_mask - covered, self.max_patches)
            added = self._add_rectangle(mask, budget, rng)
            if added == 0:
                break
            covered += added
        return mask

    def _add_rectangle(self, mask: np.ndarray, budget: int, rng: np.random.Generator) -> int:
        for _ in range(self.attempts):
            # like Python's random.uniform: budget may be below min_patches (then area <= min)
            area = self.min_patches + (budget - self.min_patches) * rng.random()
            aspect = math.exp(rng.uniform(*self.log_aspect))
            h = round(math.sqrt(area * aspect))
            w = round(math.sqrt(area / aspect))
            if w >= self.width or h >= self.height:
                continue
            top = int(rng.integers(0, self.height - h + 1))
            left = int(rng.integers(0, self.width - w + 1))
            region = mask[top : top + h, left : left + w]
            new = h * w - int(region.sum())
            if 0 < new <= budget:
                region[...] = True
                return new
        return 0


def sample_batch_masks(
    num_crops: int,
    grid: tuple[int, int],
    rng: np.random.Generator,
    ratio_range: tuple[float, float] = (0.1, 0.5),
    probability: float = 0.5,
    generator: BlockMaskGenerator | None = None,
) -> np.ndarray:
    """(num_crops, rows * columns) bool: the iBOT masks of one batch of global crops."""
    generator = generator or BlockMaskGenerator(grid)
    num_patches = int(grid[0]) * int(grid[1])
    num_masked = int(num_crops * probability)
    bounds = np.linspace(ratio_range[0], ratio_range[1], num_masked + 1)
    masks = [
        generator(int(num_patches * rng.uniform(bounds[i], bounds[i + 1])), rng).reshape(-1)
        for i in range(num_masked)
    ]
    masks += [np.zeros(num_patches, dtype=bool)] * (num_crops - num_masked)
    order = rng.permutation(num_crops)
    return np.stack([masks[i] for i in order])


__all__ = ["BlockMaskGenerator", "sample_batch_masks"]
