"""vox2vec's global intensity augmentations on cached images scaled to [0, 1].

CT caches hold ``(HU - low) / (high - low)`` clipped to [0, 1] (``preprocess.ct.window_hu``); the
published numbers are in HU, so :class:`IntensityScale` converts them once, at construction.

Every transform follows MONAI's split: ``randomize()`` draws the parameters from the transform's
own ``numpy.random.Generator`` (set with ``set_generator``), ``__call__(img, randomize=True)``
applies them. Images are channel-first float32 arrays ``(C, X, Y, Z)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from voxssl.config.pretrain import IntensityAugConfig

#: ImageNet channel statistics: the normalisation DINOv2 (and other ImageNet encoders) expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class IntensityScale:
    """Maps intensities of the source unit (HU) onto the cached [0, 1] scale."""

    low: float = 0.0
    high: float = 1.0

    @classmethod
    def identity(cls) -> IntensityScale:
        return cls(0.0, 1.0)

    def value(self, v: float) -> float:
        """An absolute intensity (e.g. a window bound)."""
        return (v - self.low) / (self.high - self.low)

    def difference(self, d: float) -> float:
        """An intensity difference (e.g. a noise standard deviation)."""
        return d / (self.high - self.low)


class RandomTransform:
    """Base of voxssl's random array transforms: an own generator, ``randomize`` then apply."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def set_generator(self, rng: np.random.Generator) -> RandomTransform:
        self.rng = rng
        return self

    def randomize(self, img: np.ndarray) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def apply(self, img: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, img: np.ndarray, randomize: bool = True) -> np.ndarray:
        if randomize:
            self.randomize(img)
        return self.apply(img)


def gaussian_blur(img: np.ndarray, sigma: float, axes: tuple[int, ...]) -> np.ndarray:
    """Separable Gaussian filter of a channel-first ``(C, X, Y, Z)`` image along the spatial
    ``axes`` (scipy's ``gaussian_filter1d``: sampled kernel truncated at 4 sigma, reflected
    borders, as vox2vec)."""
    out = np.asarray(img, dtype=np.float32)
    for axis in axes:
        out = gaussian_filter1d(out, sigma, axis=axis + 1, mode="reflect", truncate=4.0)
    return out


class RandBlurOrSharpen(RandomTransform):
    """With probability ``prob``: half of the time a Gaussian blur (sigma ~ U(blur_sigma)), else an
    unsharp-mask sharpening ``b + alpha (b - G_sigma2(b))`` with ``b = G_sigma1(x)`` (sigma1 ~
    U(sharpen_sigma1), fixed sigma2, alpha ~ U(alpha)), both along the spatial ``axes`` only
    (vox2vec: the axial plane, axes x and y)."""

    def __init__(
        self,
        prob: float,
        blur_sigma: tuple[float, float],
        sharpen_sigma1: tuple[float, float],
        sharpen_sigma2: float,
        sharpen_alpha: tuple[float, float],
        axes: tuple[int, ...] = (0, 1),
    ) -> None:
        super().__init__()
        self.prob, self.blur_sigma, self.sharpen_sigma1 = prob, blur_sigma, sharpen_sigma1
        self.sharpen_sigma2, self.sharpen_alpha = sharpen_sigma2, sharpen_alpha
        self.axes = tuple(axes)
        self.mode: str = "none"
        self.sigma = 0.0
        self.alpha = 0.0

    def randomize(self, img: np.ndarray) -> None:
        self.mode = "none"
        if self.rng.random() >= self.prob:
            return
        if self.rng.random() < 0.5:
            self.mode, self.sigma = "blur", float(self.rng.uniform(*self.blur_sigma))
        else:
            self.mode, self.sigma = "sharpen", float(self.rng.uniform(*self.sharpen_sigma1))
            self.alpha = float(self.rng.uniform(*self.sharpen_alpha))

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.mode == "blur":
            return gaussian_blur(img, self.sigma, self.axes)
        if self.mode == "sharpen":
            blurred = gaussian_blur(img, self.sigma, self.axes)
            detail = blurred - gaussian_blur(blurred, self.sharpen_sigma2, self.axes)
            return (blurred + np.float32(self.alpha) * detail).astype(np.float32, copy=False)
        return img


class RandGaussianNoiseScaled(RandomTransform):
    """Additive Gaussian noise with std ~ U(std_range) (already on the [0, 1] scale).

    MONAI's ``RandGaussianNoise`` draws std from U(0, std) with the global-style RandomState; the
    published range has a free lower bound, hence this small transform.
    """

    def __init__(self, prob: float, std_range: tuple[float, float]) -> None:
        super().__init__()
        self.prob, self.std_range = prob, std_range
        self.noise: np.ndarray | None = None

    def randomize(self, img: np.ndarray) -> None:
        self.noise = None
        if self.rng.random() >= self.prob:
            return
        std = float(self.rng.uniform(*self.std_range))
        self.noise = self.rng.standard_normal(img.shape, dtype=np.float32) * np.float32(std)

    def apply(self, img: np.ndarray) -> np.ndarray:
        return img if self.noise is None else img + self.noise


class RandWindow(RandomTransform):
    """A random intensity window [low, high] (low ~ U(low_range), high ~ U(high_range)) rescaled
    to [0, 1] and clipped: vox2vec's random HU window, on the scaled image."""

    def __init__(
        self, prob: float, low_range: tuple[float, float], high_range: tuple[float, float]
    ) -> None:
        super().__init__()
        self.prob, self.low_range, self.high_range = prob, low_range, high_range
        self.window: tuple[float, float] | None = None

    def randomize(self, img: np.ndarray) -> None:
        self.window = None
        if self.rng.random() < self.prob:
            self.window = (
                float(self.rng.uniform(*self.low_range)),
                float(self.rng.uniform(*self.high_range)),
            )

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.window is None:
            return img
        low, high = self.window
        return np.clip((img - np.float32(low)) / np.float32(high - low), 0.0, 1.0).astype(
            np.float32, copy=False
        )


def build_intensity_augmentations(
    cfg: IntensityAugConfig, scale: IntensityScale
) -> list[RandomTransform]:
    """vox2vec's sequence (blur/sharpen, noise, window) with HU numbers converted by ``scale``."""
    if not cfg.enabled:
        return []
    if cfg.units == "scaled":
        scale = IntensityScale.identity()
    return [
        RandBlurOrSharpen(
            cfg.blur_or_sharpen_prob,
            cfg.blur_sigma,
            cfg.sharpen_sigma1,
            cfg.sharpen_sigma2,
            cfg.sharpen_alpha,
            tuple(cfg.blur_axes),
        ),
        RandGaussianNoiseScaled(
            cfg.noise_prob, (scale.difference(cfg.noise_std[0]), scale.difference(cfg.noise_std[1]))
        ),
        RandWindow(
            cfg.window_prob,
            (scale.value(cfg.window_low[0]), scale.value(cfg.window_low[1])),
            (scale.value(cfg.window_high[0]), scale.value(cfg.window_high[1])),
        ),
    ]


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IntensityScale",
    "RandBlurOrSharpen",
    "RandGaussianNoiseScaled",
    "RandWindow",
    "RandomTransform",
    "build_intensity_augmentations",
    "gaussian_blur",
]
