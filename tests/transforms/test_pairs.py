"""The view generator: crops contain the anchor, positives map exactly between views."""

from __future__ import annotations

import numpy as np
import pytest

from voxssl.transforms.pairs import (
    ViewGenerator,
    sample_anchor,
    sample_crop_start,
    sample_positives,
)
from voxssl.transforms.spatial import RandomGridTransform

PATCH = (16, 12, 6)


def _volume(shape=(40, 30, 14), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random(shape, dtype=np.float32)
    body = np.zeros(shape, dtype=bool)
    body[5:-5, 4:-4, 2:-2] = True
    return image, body


@pytest.mark.parametrize("shape", [(40, 30, 14), (10, 30, 4), (16, 12, 6)])
def test_positives_index_the_same_voxel_in_both_views(shape):
    image, body = _volume(shape)
    body[:] = False
    body[1:-1, 1:-1, 1:-1] = True
    views = ViewGenerator(PATCH, positives_per_pair=50)
    for seed in range(20):
        pair = views(image, body, np.random.default_rng(seed))
        assert pair.target1.shape == (1, *PATCH) and pair.view2.shape == (1, *PATCH)
        assert len(pair.positions1) == len(pair.positions2) > 0
        volume_voxels = pair.positions1 + pair.start1
        np.testing.assert_array_equal(volume_voxels, pair.positions2 + pair.start2)
        assert body[tuple(volume_voxels.T)].all()
        values = image[tuple(volume_voxels.T)]
        np.testing.assert_array_equal(pair.target1[0][tuple(pair.positions1.T)], values)
        np.testing.assert_array_equal(pair.target2[0][tuple(pair.positions2.T)], values)
        assert len({tuple(v) for v in volume_voxels}) == len(volume_voxels)  # without replacement


def test_crops_contain_the_anchor_and_stay_inside_large_volumes():
    rng = np.random.default_rng(1)
    shape = (40, 30, 14)
    for _ in range(200):
        anchor = rng.integers(0, shape)
        start = sample_crop_start(anchor, shape, PATCH, rng)
        assert np.all(start <= anchor) and np.all(anchor < start + PATCH)
        assert np.all(start >= 0) and np.all(start + PATCH <= shape)


def test_positive_count_is_capped_and_drawn_from_the_overlap():
    _, body = _volume()
    rng = np.random.default_rng(0)
    s1, s2 = np.array([5, 4, 2]), np.array([10, 8, 4])
    p1, p2 = sample_positives(body, s1, s2, PATCH, count=30, rng=rng)
    assert p1.shape == (30, 3)
    np.testing.assert_array_equal(p1 + s1, p2 + s2)
    assert np.all(p1 >= 0) and np.all(p1 < PATCH) and np.all(p2 >= 0) and np.all(p2 < PATCH)
    # Disjoint crops have no positive.
    empty, _ = sample_positives(body, np.array([0, 0, 0]), np.array([20, 0, 0]), PATCH, 30, rng)
    assert empty.shape == (0, 3)


def test_anchor_is_in_the_body():
    _, body = _volume()
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert body[tuple(sample_anchor(body, rng))]
    sparse = np.zeros((30, 30, 30), dtype=bool)
    sparse[3, 4, 5] = True  # rejection sampling fails: the exact fallback finds it
    np.testing.assert_array_equal(sample_anchor(sparse, rng), [3, 4, 5])
    with pytest.raises(ValueError, match="empty"):
        sample_anchor(np.zeros((4, 4, 4), dtype=bool), rng)


def test_same_generator_seed_gives_the_same_pair():
    image, body = _volume()
    views = ViewGenerator(PATCH, 40)
    a = views(image, body, np.random.default_rng(7))
    b = views(image, body, np.random.default_rng(7))
    np.testing.assert_array_equal(a.view1, b.view1)
    np.testing.assert_array_equal(a.positions2, b.positions2)


@pytest.mark.parametrize("zoom_prob", [0.0, 1.0])
def test_equivariance_view_maps_view1_positives_exactly(zoom_prob):
    image, body = _volume()
    square = (12, 12, 6)
    sampler = RandomGridTransform(flip_prob=0.5, zoom_prob=zoom_prob, zoom_factors=(2,))
    views = ViewGenerator(square, 60, grid_transform_sampler=sampler)
    turns, kept = set(), 0
    for seed in range(30):
        pair = views(image, body, np.random.default_rng(seed))
        turns.add(pair.transform.quarter_turns)
        assert pair.view3.shape == (1, *square)
        keep = pair.valid3
        kept += int(keep.sum())
        # Without augmentations, view 3 is exactly T(crop 1): its value at T(p) is crop 1's at p.
        np.testing.assert_array_equal(
            pair.view3[0][tuple(pair.positions3[keep].T)],
            pair.target1[0][tuple(pair.positions1[keep].T)],
        )
        if zoom_prob == 0:
            assert keep.all()
    assert kept > 0
    assert turns & {1, 3}  # square planes get odd quarter turns too
