"""The seed paper's local augmentations: Bezier intensity, local shuffling, in-painting."""

from __future__ import annotations

import numpy as np
import pytest

from voxssl.config.pretrain import LocalAugConfig
from voxssl.transforms.local import (
    RandBezierIntensity,
    RandInPainting,
    RandLocalPixelShuffle,
    bezier_curve,
    build_local_augmentations,
)


def _image(shape=(1, 40, 40, 20), seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_bezier_curve_goes_through_its_end_points_and_stays_in_range():
    xs, ys = bezier_curve(np.array([[0, 0], [0.2, 0.9], [0.7, 0.1], [1, 1]]))
    assert xs[0] == 0 and xs[-1] == 1 and ys[0] == 0 and ys[-1] == 1
    assert np.all(np.diff(xs) >= 0) and ys.min() >= 0 and ys.max() <= 1
    # x and y sorted independently (the authors' code): never inverted, always non-decreasing
    assert np.all(np.diff(ys) >= 0)
    _, inverted = bezier_curve(np.array([[0, 0], [0.2, 0.9], [0.7, 0.1], [1, 1]]), invert=True)
    assert inverted[0] == 1 and inverted[-1] == 0 and np.all(np.diff(inverted) <= 0)
    identity_x, identity_y = bezier_curve(
        np.array([[0, 0], [1 / 3, 1 / 3], [2 / 3, 2 / 3], [1, 1]])
    )
    np.testing.assert_allclose(identity_x, identity_y, atol=1e-12)


def test_bezier_look_up_table_matches_np_interp_on_the_curve():
    """The look-up table stands in for ``np.interp`` on the 100,000 curve samples."""
    img = _image()
    transform = RandBezierIntensity(1.0)
    for points in (
        [[0, 0], [0.0, 0.3], [0.05, 0.9], [1, 1]],
        [[0, 0], [0.9, 0.1], [0.2, 0.8], [1, 1]],
    ):
        transform.set_points(np.array(points, dtype=float))
        exact = np.interp(img, *transform.curve).astype(np.float32)
        out = transform.apply(img)
        assert out.dtype == np.float32
        # ~1e-7 typically; a few 1e-5 where the first curve is almost vertical (near x = 0)
        assert np.abs(out - exact).max() < 1e-4


def test_bezier_intensity_keeps_range_and_is_a_function_of_the_value():
    img = _image()
    out = RandBezierIntensity(1.0).set_generator(np.random.default_rng(2))(img)
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out, img)
    # A look-up curve, not noise: equal inputs give equal outputs.
    same = img.copy()
    same[0, 0, 0, 1] = same[0, 0, 0, 0]
    again = RandBezierIntensity(1.0).set_generator(np.random.default_rng(2))(same)
    assert again[0, 0, 0, 1] == again[0, 0, 0, 0]


def test_local_shuffle_permutes_voxels_within_blocks_only():
    img = _image()
    transform = RandLocalPixelShuffle(1.0, num_blocks=1, block_fraction=0.1).set_generator(
        np.random.default_rng(0)
    )
    out = transform(img)
    changed = np.argwhere(out[0] != img[0])
    assert len(changed) > 0
    low, high = changed.min(axis=0), changed.max(axis=0)
    assert np.all(high - low < [4, 4, 2])  # inside one 4x4x2 block
    np.testing.assert_array_equal(np.sort(out.ravel()), np.sort(img.ravel()))  # a permutation


def test_shared_permutation_moves_every_block_the_same_way_and_later_blocks_win():
    img = np.arange(1 * 8 * 8 * 4, dtype=np.float32).reshape(1, 8, 8, 4)
    transform = RandLocalPixelShuffle(1.0, 2, 0.25)  # 2x2x1 blocks
    order = np.array([[3, 2, 1, 0], [3, 2, 1, 0]])
    transform.set_blocks(np.array([[0, 0, 0], [4, 4, 2]]), np.array([2, 2, 1]), order, (8, 8, 4))
    out = transform.apply(img)
    assert out[0, 0, 0, 0] == img[0, 1, 1, 0] and out[0, 1, 1, 0] == img[0, 0, 0, 0]
    assert out[0, 4, 4, 2] == img[0, 5, 5, 2]
    # overlapping blocks: the second write wins, read from the input (not the first block's output)
    transform.set_blocks(
        np.array([[0, 0, 0], [0, 0, 0]]), np.array([2, 2, 1]), order[:, ::-1], (8, 8, 4)
    )
    np.testing.assert_array_equal(transform.apply(img), img)
    drawn = RandLocalPixelShuffle(1.0, 50, 0.25).set_generator(np.random.default_rng(0))
    drawn.randomize(img)
    per_block = RandLocalPixelShuffle(1.0, 50, 0.25, "per_block").set_generator(
        np.random.default_rng(0)
    )
    per_block.randomize(img)
    assert drawn.flat_index is not None and per_block.flat_index is not None


def test_many_blocks_change_many_voxels_but_keep_the_histogram():
    img = _image()
    out = RandLocalPixelShuffle(1.0, 5000, 0.05).set_generator(np.random.default_rng(1))(img)
    assert (out != img).mean() > 0.2
    assert abs(out.mean() - img.mean()) < 1e-3


def test_inpainting_fills_boxes_with_uniform_noise():
    img = np.full(
        (1, 40, 40, 20), 2.0, dtype=np.float32
    )  # outside [0, 1]: painted voxels are visible
    transform = RandInPainting(1.0, 30, 0.95, (0.1, 0.2)).set_generator(np.random.default_rng(0))
    out = transform(img)
    painted = out != 2.0
    assert 1 <= len(transform.boxes) <= 30
    assert painted.any() and out[painted].min() >= 0 and out[painted].max() < 1
    for start, size, _ in transform.boxes:
        # the authors' draws: side randint(n // 10, n // 5), start randint(3, n - side - 3)
        assert all(n // 10 <= s < n // 5 for s, n in zip(size, img.shape[1:], strict=True))
        assert all(3 <= a < n - s - 3 for a, s, n in zip(start, size, img.shape[1:], strict=True))
        box = out[(0, *[slice(a, a + s) for a, s in zip(start, size, strict=True)])]
        assert (box < 1).all()
    # the continue-probability is checked before the first box too: sometimes no box at all
    untouched = [
        RandInPainting(1.0, 30, 0.5, (0.1, 0.2)).set_generator(np.random.default_rng(s))(img) is img
        for s in range(40)
    ]
    assert 0 < sum(untouched) < 40


def test_same_generator_same_views_and_build_order():
    transforms = build_local_augmentations(LocalAugConfig())
    assert [type(t).__name__ for t in transforms] == [
        "RandLocalPixelShuffle",
        "RandBezierIntensity",
        "RandInPainting",
    ]
    img = _image()

    def run(seed):
        rng = np.random.default_rng(seed)
        out = img
        for t in transforms:
            out = t.set_generator(rng)(out)
        return out

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))
    assert build_local_augmentations(LocalAugConfig(enabled=False)) == []
    with pytest.raises(ValueError, match="shuffle_block_fraction"):
        LocalAugConfig(shuffle_block_fraction=0.0)
