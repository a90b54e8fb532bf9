"""The classification inputs: resize, the training augmentation's geometry, RGB + normalisation."""

from __future__ import annotations

import numpy as np
import torch

from voxssl.config.classify import ClassifyAugmentConfig
from voxssl.transforms.classification import affine, augment_for_training, classification_input


def test_affine_translation_moves_the_content():
    image = torch.zeros(10, 10)
    image[4, 3] = 1.0
    moved = affine(image, np.array([[1.0, 0.0, -2.0], [0.0, 1.0, 1.0]]))  # output -> input
    assert moved[3, 5] == 1.0 and moved.sum() == 1.0


def test_neutral_augmentation_is_the_identity():
    image = torch.rand(16, 16, generator=torch.Generator().manual_seed(0))
    neutral = ClassifyAugmentConfig(
        rotate_deg=0.0, hflip_prob=0.0, crop_scale=(1.0, 1.0), shear_deg=0.0, translate=0.0
    )
    out = augment_for_training(image, neutral, np.random.default_rng(0))
    torch.testing.assert_close(out, image, atol=1e-5, rtol=0)


def test_inputs_are_rgb_normalised_and_reproducible():
    image = torch.rand(30, 20, generator=torch.Generator().manual_seed(1))
    plain = classification_input(image, 28, normalise_imagenet=False)
    assert plain.shape == (3, 28, 28) and torch.equal(plain[0], plain[2])
    augmented = [
        classification_input(image, 28, True, ClassifyAugmentConfig(), np.random.default_rng(5))
        for _ in range(2)
    ]
    assert torch.equal(augmented[0], augmented[1])
    assert not torch.allclose(augmented[0], classification_input(image, 28, True))
