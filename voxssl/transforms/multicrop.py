"""DINOv2's multi-crop augmentation of one grey image, written with torch tensor ops (no torchvision).

From one image (H, W) in [0, 1], DINOv2 (``DataAugmentationDINO``) makes two *global* crops and
``L`` *local* crops:

- geometry: a random resized crop (area fraction ~ U(scale), aspect ratio log-uniform in
  [3/4, 4/3], 10 attempts, then a centre crop; resized bicubically, antialiased, to the crop size),
  then a horizontal flip with probability 0.5 (MediDino adds a vertical flip, ``vflip_prob``);
- colour: with probability 0.8 a colour jitter (brightness and contrast factors ~ U(1 -/+ 0.4), in
  random order; saturation 0.2 and hue 0.1 change nothing on a grey image, nor does the random
  greyscale conversion, so they are left out), then a Gaussian blur (9 x 9 kernel, sigma ~
  U(0.1, 2), reflect padding) with a probability per crop kind, and on the second global crop a
  solarisation (values >= 0.5 -> 1 - value) with probability 0.2;
- the grey crop is repeated to 3 channels and normalised with the ImageNet mean and std, the
  input the released DINOv2 weights expect (and the few-shot encoder gives them).

Blur probabilities: DINOv2's text (and DINO's) says 1.0 / 0.1 / 0.5 for global crop 1 / global
crop 2 / local crops, but the authors' ``GaussianBlur`` passes ``1 - p`` to torchvision's
``RandomApply``, so their training (and MediDino's) blurred with 0.0 / 0.9 / 0.5
(facebookresearch/dinov2 PR #411). ``blur_prob`` takes either; the recipes say which they use.

Parameters are drawn from the ``numpy.random.Generator`` passed in (``sample_*`` functions), the
pixel work is deterministic (``apply``-style functions), so a crop is a function of the image and
the generator state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from voxssl.transforms.intensity import IMAGENET_MEAN, IMAGENET_STD

_RATIO = (3.0 / 4.0, 4.0 / 3.0)


@dataclass(frozen=True)
class CropBox:
    top: int
    left: int
    height: int
    width: int


def sample_resized_crop(
    height: int,
    width: int,
    scale: tuple[float, float],
    rng: np.random.Generator,
    ratio: tuple[float, float] = _RATIO,
    attempts: int = 10,
) -> CropBox:
    """torchvision's ``RandomResizedCrop.get_params`` semantics, drawn from ``rng``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return CropBox(top, left, h, w)
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return CropBox((height - h) // 2, (width - w) // 2, h, w)


def resized_crop(image: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """(H, W) -> (size, size): the box, bicubic (antialiased when shrinking), clipped to [0, 1]."""
    crop = image[box.top : box.top + box.height, box.left : box.left + box.width]
    out = F.interpolate(
        crop[None, None], size=(size, size), mode="bicubic", align_corners=False, antialias=True
    )
    return out[0, 0].clamp_(0.0, 1.0)


def adjust_brightness(image: torch.Tensor, factor: float) -> torch.Tensor:
    return (image * factor).clamp(0.0, 1.0)


def adjust_contrast(image: torch.Tensor, factor: float) -> torch.Tensor:
    """Blend with the image's mean grey value (torchvision's definition)."""
    return (factor * image + (1.0 - factor) * image.mean()).clamp(0.0, 1.0)


def gaussian_kernel(sigma: float, size: int = 9) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(image: torch.Tensor, sigma: float, size: int = 9) -> torch.Tensor:
    """Separable Gaussian blur of (H, W) with reflect padding (torchvision's ``gaussian_blur``)."""
    kernel = gaussian_kernel(sigma, size)
    pad = size // 2
    x = F.pad(image[None, None], (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, size))
    x = F.conv2d(x, kernel.view(1, 1, size, 1))
    return x[0, 0]


def solarize(image: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    return torch.where(image >= threshold, 1.0 - image, image)


def to_network_input(image: torch.Tensor, normalise_imagenet: bool = True) -> torch.Tensor:
    """(H, W) grey in [0, 1] -> (3, H, W): repeated to RGB, ImageNet-normalised."""
    rgb = image.expand(3, -1, -1)
    if not normalise_imagenet:
        return rgb.contiguous()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (rgb - mean) / std


@dataclass(frozen=True)
class MultiCropSettings:
    """The numbers of :class:`MultiCrop` (a view of the recipe's ``dinov2.crops`` section)."""

    global_size: int = 224
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_number: int = 8
    local_size: int = 98
    local_scale: tuple[float, float] = (0.05, 0.32)
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    blur_prob: tuple[float, float, float] = (0.0, 0.9, 0.5)  # global 1, global 2, local
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 9
    solarize_prob: float = 0.2  # second global crop only
    solarize_threshold: float = 0.5
    normalise_imagenet: bool = True


class MultiCrop:
    """``MultiCrop(settings)(image, rng) -> (global (2, 3, G, G), local (L, 3, l, l))``."""

    def __init__(self, settings: MultiCropSettings) -> None:
        self.s = settings

    def __call__(
        self, image: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.s
        if image.ndim != 2:
            raise ValueError(f"MultiCrop expects one grey (H, W) image, got {tuple(image.shape)}")
        image = image.float()
        global_crops = [
            self._crop(image, s.global_size, s.global_scale, s.blur_prob[i], i == 1, rng)
            for i in range(2)
        ]
        local_crops = [
            self._crop(image, s.local_size, s.local_scale, s.blur_prob[2], False, rng)
            for _ in range(s.local_number)
        ]
        local = (
            torch.stack(local_crops)
            if local_crops
            else torch.zeros(0, 3, s.local_size, s.local_size)
        )
        return torch.stack(global_crops), local

    def _crop(
        self,
        image: torch.Tensor,
        size: int,
        scale: tuple[float, float],
        blur_prob: float,
        may_solarize: bool,
        rng: np.random.Generator,
    ) -> torch.Tensor:
        s = self.s
        box = sample_resized_crop(image.shape[0], image.shape[1], scale, rng)
        crop = resized_crop(image, box, size)
        if rng.random() < s.hflip_prob:
            crop = crop.flip(1)
        if rng.random() < s.vflip_prob:
            crop = crop.flip(0)
        if rng.random() < s.jitter_prob:
            brightness = rng.uniform(1 - s.brightness, 1 + s.brightness)
            contrast = rng.uniform(1 - s.contrast, 1 + s.contrast)
            if rng.random() < 0.5:
                crop = adjust_contrast(adjust_brightness(crop, brightness), contrast)
            else:
                crop = adjust_brightness(adjust_contrast(crop, contrast), brightness)
        if rng.random() < blur_prob:
            crop = gaussian_blur(crop, rng.uniform(*s.blur_sigma), s.blur_kernel)
        if may_solarize and rng.random() < s.solarize_prob:
            crop = solarize(crop, s.solarize_threshold)
        return to_network_input(crop, s.normalise_imagenet)


__all__ = [
    "CropBox",
    "MultiCrop",
    "MultiCropSettings",
    "adjust_brightness",
    "adjust_contrast",
    "gaussian_blur",
    "resized_crop",
    "sample_resized_crop",
    "solarize",
    "to_network_input",
]
