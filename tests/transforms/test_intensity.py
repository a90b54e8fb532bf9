"""vox2vec intensity augmentations on the [0, 1] scale, with HU parameters converted."""

from __future__ import annotations

import numpy as np
import pytest

from voxssl.config.pretrain import IntensityAugConfig
from voxssl.transforms.intensity import (
    IntensityScale,
    RandBlurOrSharpen,
    RandGaussianNoiseScaled,
    RandWindow,
    build_intensity_augmentations,
)

CT = IntensityScale(-1350.0, 1000.0)


def _image(seed=0):
    return np.random.default_rng(seed).random((1, 12, 10, 6), dtype=np.float32)


def test_hu_conversion_through_the_window():
    assert CT.value(-1350) == 0 and CT.value(1000) == 1
    assert CT.value(-175) == pytest.approx(0.5)
    assert CT.difference(30) == pytest.approx(30 / 2350)


def test_random_window_equals_the_hu_window_of_the_original_image():
    hu = np.random.default_rng(1).uniform(-1350, 1000, size=(1, 8, 8, 4)).astype(np.float32)
    scaled = (hu + 1350) / 2350
    window = RandWindow(1.0, (CT.value(-1100), CT.value(-1100)), (CT.value(400), CT.value(400)))
    out = window.set_generator(np.random.default_rng(0))(scaled)
    expected = np.clip((hu + 1100) / 1500, 0, 1)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_noise_std_is_drawn_in_range_and_reproducible():
    noise = RandGaussianNoiseScaled(1.0, (0.01, 0.01))
    img = np.zeros((1, 40, 40, 20), dtype=np.float32)
    out = noise.set_generator(np.random.default_rng(3))(img)
    assert out.std() == pytest.approx(0.01, rel=0.05)
    again = noise.set_generator(np.random.default_rng(3))(img)
    np.testing.assert_array_equal(out, again)


def test_blur_smooths_and_sharpen_amplifies_detail():
    img = _image()
    transform = RandBlurOrSharpen(1.0, (1.0, 1.0), (0.5, 0.5), 0.5, (20.0, 20.0))
    seen = set()
    for seed in range(20):
        transform.set_generator(np.random.default_rng(seed))
        out = transform(img)
        seen.add(transform.mode)
        assert out.shape == img.shape and out.dtype == np.float32
        if transform.mode == "blur":
            assert out.std() < img.std()
        else:
            assert out.std() > img.std()
    assert seen == {"blur", "sharpen"}


def test_blur_and_sharpen_filter_in_the_axial_plane_only_by_default():
    """vox2vec filters along x and y; slices along z stay independent."""
    img = np.zeros((1, 24, 24, 6), dtype=np.float32)
    img[0, 12, 12, 3] = 1.0
    for seed in range(8):
        transform = RandBlurOrSharpen(1.0, (1.0, 1.0), (0.7, 0.7), 0.5, (20.0, 20.0))
        out = transform.set_generator(np.random.default_rng(seed))(img)
        assert np.abs(out[0, :, :, [0, 1, 2, 4, 5]]).max() == 0.0  # nothing leaks across slices
        assert np.abs(out[0, 11, 12, 3]) > 0  # but it spreads in the plane
    in_3d = RandBlurOrSharpen(1.0, (1.0, 1.0), (0.7, 0.7), 0.5, (20.0, 20.0), axes=(0, 1, 2))
    for seed in range(4):
        out = in_3d.set_generator(np.random.default_rng(seed))(img)
        assert np.abs(out[0, 12, 12, 2]) > 0


def test_probability_zero_is_identity_and_randomize_false_reuses_parameters():
    img = _image()
    for transform in (
        RandBlurOrSharpen(0.0, (1, 1), (1, 1), 0.5, (10, 10)),
        RandGaussianNoiseScaled(0.0, (0, 1)),
        RandWindow(0.0, (0, 0.1), (0.5, 1)),
    ):
        assert transform.set_generator(np.random.default_rng(0))(img) is img
    window = RandWindow(1.0, (0.0, 0.2), (0.6, 1.0)).set_generator(np.random.default_rng(0))
    first = window(img)
    np.testing.assert_array_equal(window(img, randomize=False), first)


def test_build_uses_units():
    transforms = build_intensity_augmentations(IntensityAugConfig(), CT)
    assert [type(t).__name__ for t in transforms] == [
        "RandBlurOrSharpen",
        "RandGaussianNoiseScaled",
        "RandWindow",
    ]
    assert transforms[1].std_range[1] == pytest.approx(30 / 2350)
    assert transforms[2].low_range[0] == pytest.approx(0.0)
    scaled = build_intensity_augmentations(
        IntensityAugConfig(
            units="scaled", noise_std=(0, 0.05), window_low=(0, 0.1), window_high=(0.8, 1)
        ),
        CT,
    )
    assert scaled[1].std_range[1] == pytest.approx(0.05)
    assert build_intensity_augmentations(IntensityAugConfig(enabled=False), CT) == []


def test_config_rejects_bad_ranges():
    with pytest.raises(ValueError, match="noise_prob"):
        IntensityAugConfig(noise_prob=1.5)
    with pytest.raises(ValueError, match="window_low"):
        IntensityAugConfig(window_low=(0.0, 500.0), window_high=(300.0, 1000.0))
