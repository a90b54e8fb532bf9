"""Inputs of the classification protocol: resize to S x S, the training augmentation, RGB + norm.

Every image is first resized (bilinear, antialiased) to S x S, ignoring its aspect ratio, as
MediDino's ``Resize((224, 224))``. The training augmentation is that of their fine-tuning code
(torchvision there, torch ops here), in their order: rotation by U(-r, r) degrees, horizontal flip,
random resized crop back to S x S (area fraction U(crop_scale), aspect ratio log-uniform in
[3/4, 4/3], the centre crop when no box fits), x-shear by U(-s, s) degrees, translation by up to
``translate`` of the size on each axis. Rotation, shear and translation resample bilinearly and
fill with 0 outside the image. Parameters come from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from voxssl.config.classify import ClassifyAugmentConfig
from voxssl.transforms.multicrop import sample_resized_crop, to_network_input


def resize_square(image: torch.Tensor, size: int) -> torch.Tensor:
    """(H, W) -> (size, size), bilinear with antialiasing, clipped to [0, 1]."""
    if tuple(image.shape) == (size, size):
        return image
    out = F.interpolate(
        image[None, None], size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return out[0, 0].clamp(0.0, 1.0)


def affine(image: torch.Tensor, matrix: np.ndarray) -> torch.Tensor:
    """Resample (H, W) with a 2x3 affine ``matrix`` that maps output to input coordinates in
    pixel units about the image centre (x right, y down); outside: 0."""
    h, w = image.shape
    # pixel-centred coordinates -> normalised [-1, 1] (align_corners=False)
    to_norm = np.array([[2.0 / w, 0, 0], [0, 2.0 / h, 0], [0, 0, 1]])
    from_norm = np.linalg.inv(to_norm)
    full = np.vstack([matrix, [0, 0, 1]])
    theta = (to_norm @ full @ from_norm)[:2]
    grid = F.affine_grid(
        torch.tensor(theta, dtype=torch.float32)[None], [1, 1, h, w], align_corners=False
    )
    return F.grid_sample(
        image[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[0, 0]


def _rotation(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])


def augment_for_training(
    image: torch.Tensor, cfg: ClassifyAugmentConfig, rng: np.random.Generator
) -> torch.Tensor:
    """(S, S) in [0, 1] -> augmented (S, S) in [0, 1] (see the module docstring)."""
    size = image.shape[0]
    if cfg.rotate_deg > 0:
        image = affine(image, _rotation(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)))
    if rng.random() < cfg.hflip_prob:
        image = image.flip(1)
    low, high = cfg.crop_scale
    box = sample_resized_crop(size, size, (low, high), rng)
    crop = image[box.top : box.top + box.height, box.left : box.left + box.width]
    image = resize_square(crop, size)
    shear = math.tan(math.radians(rng.uniform(-cfg.shear_deg, cfg.shear_deg)))
    dx, dy = (rng.uniform(-cfg.translate, cfg.translate) * size for _ in range(2))
    # output -> input: undo the translation, then the shear
    image = affine(image, np.array([[1.0, -shear, -dx + shear * dy], [0.0, 1.0, -dy]]))
    return image.clamp(0.0, 1.0)


def classification_input(
    image: torch.Tensor,
    size: int,
    normalise_imagenet: bool,
    augment: ClassifyAugmentConfig | None = None,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """(H, W) grey in [0, 1] -> (3, size, size) network input (augmented when ``augment``)."""
    image = resize_square(image.float(), size)
    if augment is not None and augment.enabled:
        if rng is None:
            raise ValueError("augmentation needs a generator")
        image = augment_for_training(image, augment, rng)
    return to_network_input(image, normalise_imagenet)


__all__ = ["affine", "augment_for_training", "classification_input", "resize_square"]
