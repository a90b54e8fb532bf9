"""iBOT block masking: rectangles within the budget, the batch's ratios, determinism."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from voxssl.transforms.block_mask import BlockMaskGenerator, sample_batch_masks


def test_a_mask_is_made_of_rectangles_within_the_requested_count():
    generator = BlockMaskGenerator((14, 14))
    for seed in range(20):
        rng = np.random.default_rng(seed)
        wanted = int(rng.integers(10, 90))
        mask = generator(wanted, rng)
        assert 0 < mask.sum() <= wanted
        # every connected piece is a union of axis-aligned rectangles no larger than max_patches
        labels, count = ndimage.label(mask)
        for piece in range(1, count + 1):
            assert (labels == piece).sum() <= wanted
    assert generator.max_patches == 98  # half of the grid, as in DINOv2's collate


def test_a_single_rectangle_respects_the_aspect_bounds():
    generator = BlockMaskGenerator((20, 20), min_patches=4, max_patches=40)
    for seed in range(30):
        mask = np.zeros((20, 20), dtype=bool)
        added = generator._add_rectangle(mask, 40, np.random.default_rng(seed))
        if added:
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            h, w = len(rows), len(cols)
            assert mask.sum() == h * w == added <= 40  # one filled rectangle
            assert 0.3 - 0.2 <= h / w <= 1 / 0.3 + 1.5  # log-uniform aspect, rounded to patches


def test_batch_masks_span_the_ratio_range_and_are_shuffled():
    rng = np.random.default_rng(0)
    masks = sample_batch_masks(8, (16, 16), rng, ratio_range=(0.1, 0.5), probability=0.5)
    assert masks.shape == (8, 256) and masks.dtype == bool
    counts = sorted(int(c) for c in masks.sum(1))
    assert counts[:4] == [0, 0, 0, 0]  # int(8 * 0.5) = 4 crops are masked
    assert all(0 < c <= 0.5 * 256 for c in counts[4:])
    # the i-th masked crop asks for a ratio in the i-th quarter of [0.1, 0.5]
    assert counts[-1] > 0.3 * 256 * 0.5
    again = sample_batch_masks(8, (16, 16), np.random.default_rng(0))
    np.testing.assert_array_equal(masks, again)
