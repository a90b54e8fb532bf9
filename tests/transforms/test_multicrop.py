"""DINOv2 multi-crop: crop geometry (torchvision semantics), the photometric ops, output shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from voxssl.transforms.multicrop import (
    MultiCrop,
    MultiCropSettings,
    adjust_contrast,
    gaussian_blur,
    sample_resized_crop,
    solarize,
    to_network_input,
)


def test_resized_crop_boxes_have_the_requested_area_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        box = sample_resized_crop(120, 90, (0.32, 1.0), rng)
        assert box.top >= 0 and box.top + box.height <= 120
        assert box.left >= 0 and box.left + box.width <= 90
        area = box.height * box.width / (120 * 90)
        assert 0.32 - 0.03 <= area <= 1.0
        assert 3 / 4 - 0.05 <= box.width / box.height <= 4 / 3 + 0.05


def test_resized_crop_falls_back_to_a_centre_crop():
    """An impossible scale for a very elongated image: torchvision's fallback, a centred box."""
    box = sample_resized_crop(10, 200, (1.0, 1.0), np.random.default_rng(0), attempts=3)
    assert (box.height, box.width) == (10, round(10 * 4 / 3))
    assert box.left == (200 - box.width) // 2 and box.top == 0


def test_gaussian_blur_matches_a_direct_convolution():
    image = torch.rand(12, 15, generator=torch.Generator().manual_seed(0))
    sigma, size = 1.3, 9
    weights = [math.exp(-0.5 * ((i - 4) / sigma) ** 2) for i in range(size)]
    weights = [w / sum(weights) for w in weights]
    padded = np.pad(image.numpy().astype(np.float64), 4, mode="reflect")
    expected = np.zeros((12, 15))
    for y in range(12):
        for x in range(15):
            expected[y, x] = sum(
                weights[i] * weights[j] * padded[y + i, x + j]
                for i in range(size)
                for j in range(size)
            )
    np.testing.assert_allclose(gaussian_blur(image, sigma).numpy(), expected, atol=1e-5)


def test_photometric_ops():
    image = torch.tensor([[0.2, 0.6], [0.4, 0.8]])
    np.testing.assert_allclose(solarize(image, 0.5), [[0.2, 0.4], [0.4, 0.2]], atol=1e-7)
    # contrast blends with the mean grey value (0.5); factor 0 gives a flat image
    np.testing.assert_allclose(adjust_contrast(image, 0.0), torch.full((2, 2), 0.5), atol=1e-7)
    np.testing.assert_allclose(adjust_contrast(image, 2.0), [[0.0, 0.7], [0.3, 1.0]], atol=1e-6)
    rgb = to_network_input(torch.full((2, 2), 0.485))
    assert rgb.shape == (3, 2, 2) and rgb[0].abs().max() < 1e-6  # ImageNet mean maps to 0


def test_multicrop_shapes_and_determinism():
    image = torch.rand(60, 50, generator=torch.Generator().manual_seed(1))
    augment = MultiCrop(MultiCropSettings(global_size=28, local_size=14, local_number=3))
    global_crops, local_crops = augment(image, np.random.default_rng(3))
    assert global_crops.shape == (2, 3, 28, 28) and local_crops.shape == (3, 3, 14, 14)
    again = augment(image, np.random.default_rng(3))
    assert torch.equal(global_crops, again[0]) and torch.equal(local_crops, again[1])
    with pytest.raises(ValueError, match="grey"):
        augment(image[None], np.random.default_rng(0))
