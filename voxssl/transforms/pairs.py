"""The view generator: two overlapping crops of one volume, their augmented views, the clean
targets and the voxel correspondences between them.

Geometry (all coordinates are integer voxel indices, RAS order (x, y, z)):

- an anchor voxel ``a`` is drawn inside the body mask;
- each crop start ``s`` is drawn so that the crop ``[s, s + patch)`` contains ``a`` and lies inside
  the volume; along an axis shorter than the patch the crop sticks out on both sides (``s`` may be
  negative) and the outside is padded with 0 (the bottom of the intensity scale, outside the body);
- positives are voxels ``v`` inside both crops and inside the body, up to N drawn without
  replacement; ``v - s1`` indexes view 1 and ``v - s2`` view 2, exactly;
- with an equivariance transform T (flips / in-plane 90-degree rotations, exact on the grid), a
  third view is made (Pix2Rep): crop 1 with fresh augmentations, then T; its positives are view
  1's positives mapped by T, so ``f(T(x))`` at ``T(p)`` is compared with ``f(x)`` at ``p``.

Everything random comes from the ``numpy.random.Generator`` passed in, so a pair depends only on
that generator's seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from voxssl.transforms.crop import padded_crop
from voxssl.transforms.intensity import RandomTransform
from voxssl.transforms.spatial import GridTransform, RandomGridTransform

_ANCHOR_ATTEMPTS = 256


@dataclass
class PairSample:
    """One pair of views. Images are float32 ``(C, X, Y, Z)``; positions int64 ``(N, 3)``."""

    view1: np.ndarray
    view2: np.ndarray
    target1: np.ndarray  # clean crop 1 (reconstruction target of view 1)
    target2: np.ndarray  # clean crop 2
    positions1: np.ndarray  # positives in view-1 coordinates
    positions2: np.ndarray  # the same voxels in view-2 coordinates
    start1: np.ndarray  # crop origins in volume coordinates (may be negative: padding)
    start2: np.ndarray
    anchor: np.ndarray
    view3: np.ndarray | None = None  # T(crop 1, augmented afresh), with an equivariance transform
    positions3: np.ndarray | None = None  # T(positions1), in view-3 coordinates
    valid3: np.ndarray | None = None  # (N,) bool: T(p) lies inside view 3 (a zoom crops some out)
    transform: GridTransform | None = None
    case_id: str = ""
    metadata: dict = field(default_factory=dict)


def as_channel_first(image: np.ndarray) -> np.ndarray:
    """Cached images are (X, Y, Z) or (C, X, Y, Z); views are always (C, X, Y, Z)."""
    if image.ndim == 3:
        return image[None]
    if image.ndim == 4:
        return image
    raise ValueError(f"expected a 3D image (X, Y, Z) or (C, X, Y, Z), got shape {image.shape}")


def sample_anchor(body: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random voxel of the body mask (rejection sampling, exact fallback)."""
    shape = np.array(body.shape)
    for _ in range(_ANCHOR_ATTEMPTS):
        voxel = rng.integers(0, shape)
        if body[tuple(voxel)]:
            return voxel.astype(np.int64)
    inside = np.flatnonzero(np.asarray(body).reshape(-1))
    if inside.size == 0:
        raise ValueError("the body mask is empty")
    return np.array(np.unravel_index(rng.choice(inside), body.shape), dtype=np.int64)


def sample_crop_start(
    anchor: np.ndarray,
    volume_shape: tuple[int, ...],
    patch: tuple[int, int, int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Origin ``s`` of a crop of size ``patch`` with ``s <= anchor < s + patch``, inside the volume
    where the volume is large enough, else covering the whole axis."""
    starts = np.empty(3, dtype=np.int64)
    for axis, (a, n, p) in enumerate(zip(anchor, volume_shape, patch, strict=True)):
        low, high = max(a - p + 1, min(0, n - p)), min(a, max(0, n - p))
        starts[axis] = rng.integers(low, high + 1)
    return starts


def sample_positives(
    body: np.ndarray,
    start1: np.ndarray,
    start2: np.ndarray,
    patch: tuple[int, int, int],
    count: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``count`` body voxels inside both crops, without replacement, in each crop's coordinates."""
    low = np.maximum(np.maximum(start1, start2), 0)
    high = np.minimum(np.minimum(start1, start2) + np.array(patch), body.shape)
    if np.any(high <= low):
        empty = np.zeros((0, 3), dtype=np.int64)
        return empty, empty
    region = np.asarray(body[low[0] : high[0], low[1] : high[1], low[2] : high[2]])
    inside = np.flatnonzero(region.reshape(-1))
    if inside.size > count:
        inside = rng.choice(inside, size=count, replace=False)
    voxels = np.stack(np.unravel_index(inside, region.shape), axis=1).astype(np.int64) + low
    return voxels - start1, voxels - start2


class ViewGenerator:
    """Draws a :class:`PairSample` from one volume (``image`` (C, X, Y, Z) or (X, Y, Z) in [0, 1],
    ``body`` bool (X, Y, Z)); memory-mapped arrays are read crop by crop."""

    def __init__(
        self,
        patch_size: tuple[int, int, int],
        positives_per_pair: int,
        augmentations: list[RandomTransform] | None = None,
        grid_transform_sampler: RandomGridTransform | None = None,
    ) -> None:
        x, y, z = (int(p) for p in patch_size)
        self.patch_size = (x, y, z)
        self.positives_per_pair = positives_per_pair
        self.augmentations = list(augmentations or [])
        self.grid_transform_sampler = grid_transform_sampler

    def augment(self, crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        view = crop
        for transform in self.augmentations:
            view = transform.set_generator(rng)(view)
        return np.ascontiguousarray(view, dtype=np.float32)

    def __call__(
        self, image: np.ndarray, body: np.ndarray, rng: np.random.Generator, case_id: str = ""
    ) -> PairSample:
        image = as_channel_first(image)
        if image.shape[1:] != body.shape:
            raise ValueError(
                f"image {image.shape} and body mask {body.shape} grids differ ({case_id})"
            )
        anchor = sample_anchor(body, rng)
        start1 = sample_crop_start(anchor, body.shape, self.patch_size, rng)
        start2 = sample_crop_start(anchor, body.shape, self.patch_size, rng)
        positions1, positions2 = sample_positives(
            body, start1, start2, self.patch_size, self.positives_per_pair, rng
        )
        target1 = padded_crop(image, start1.tolist(), self.patch_size, dtype=np.float32)
        target2 = padded_crop(image, start2.tolist(), self.patch_size, dtype=np.float32)
        view1 = self.augment(target1, rng)
        view2 = self.augment(target2, rng)
        sample = PairSample(
            view1=view1,
            view2=view2,
            target1=target1,
            target2=target2,
            positions1=positions1,
            positions2=positions2,
            start1=start1,
            start2=start2,
            anchor=anchor,
            case_id=case_id,
        )
        if self.grid_transform_sampler is not None:
            transform = self.grid_transform_sampler(rng, self.patch_size)
            sample.transform = transform
            sample.view3 = np.ascontiguousarray(
                transform.apply_image(self.augment(target1, rng)), dtype=np.float32
            )
            sample.positions3 = np.asarray(
                transform.map_points(positions1, self.patch_size), dtype=np.int64
            )
            sample.valid3 = np.asarray(transform.inside(sample.positions3), dtype=bool)
            sample.positions3[~sample.valid3] = 0
        return sample


__all__ = [
    "PairSample",
    "ViewGenerator",
    "as_channel_first",
    "sample_anchor",
    "sample_crop_start",
    "sample_positives",
]
