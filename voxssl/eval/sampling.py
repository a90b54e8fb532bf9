"""Labelled patches for the downstream training loops.

A fraction ``foreground_fraction`` of the patches is centred on a voxel of an organ (first an
organ present in the case, uniformly, then one of its voxels, so small organs are seen as often
as the liver); the rest are centred on a uniformly drawn voxel of the volume. Patches that reach
outside the volume are padded: image 0, label IGNORE_INDEX, body mask False (never trained).

Targets are remapped from canonical ids to training indices: 0 background, k + 1 the recipe's
k-th class, IGNORE_INDEX kept. Canonical organs that are not recipe classes become background.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxssl.errors import DataError
from voxssl.transforms.crop import padded_crop
from voxssl.vocabulary import IGNORE_INDEX, ORGANS

#: foreground voxel coordinates kept per organ and case (a uniform subsample of the organ)
MAX_CENTRES_PER_ORGAN = 20_000

#: A training batch: "target", "body", "annotated" and either "image" (:class:`PatchSampler`) or
#: "levels", one array per pyramid level (the feature cache's ``CachedPatchSampler``).
PatchBatch = dict[str, np.ndarray | list[np.ndarray]]


@dataclass
class LabelledVolume:
    """One training case in memory, ready to be cropped."""

    case_id: str
    image: np.ndarray  # float32 (C, X, Y, Z)
    target: np.ndarray  # uint8 (X, Y, Z): 0, k + 1, IGNORE_INDEX
    body_mask: np.ndarray  # bool (X, Y, Z)
    annotated: np.ndarray  # bool (K,): recipe class k is annotated in this case
    centres: list[np.ndarray]  # per present organ: (N, 3) int voxel coordinates

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.target.shape
        return x, y, z


def remap_label(label: np.ndarray, class_ids: Sequence[int], where: str) -> np.ndarray:
    """Canonical ids -> training indices (0, k + 1, IGNORE_INDEX); unknown ids are an error."""
    present = np.unique(label)
    unknown = [int(v) for v in present if v != 0 and v != IGNORE_INDEX and int(v) not in ORGANS]
    if unknown:
        raise DataError(
            f"{where}: label ids {unknown} are not in the canonical vocabulary (voxssl.vocabulary)"
        )
    lut = np.zeros(256, dtype=np.uint8)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    for k, organ in enumerate(class_ids):
        lut[organ] = k + 1
    return lut[np.asarray(label, dtype=np.uint8)]


def as_channels(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float32)
    return image[None] if image.ndim == 3 else image


def labelled_volume(
    case_id: str,
    image: np.ndarray,
    label: np.ndarray,
    body_mask: np.ndarray,
    class_ids: Sequence[int],
    annotated: Sequence[int] | None,
    rng: np.random.Generator,
) -> LabelledVolume:
    """Remap the label and index each present organ's voxels (subsampled) for centring."""
    target = remap_label(label, class_ids, where=f"case {case_id}")
    annotated_ids = set(class_ids if annotated is None else annotated)
    centres = []
    for k in range(len(class_ids)):
        coords = np.argwhere(target == k + 1)
        if len(coords) > MAX_CENTRES_PER_ORGAN:
            coords = coords[rng.choice(len(coords), MAX_CENTRES_PER_ORGAN, replace=False)]
        if len(coords):
            centres.append(coords.astype(np.int32))
    return LabelledVolume(
        case_id=case_id,
        image=as_channels(image),
        target=target,
        body_mask=np.asarray(body_mask, dtype=bool),
        annotated=np.array([c in annotated_ids for c in class_ids]),
        centres=centres,
    )


class PatchSampler:
    """Draws batches of (image, target, body mask, annotated) patches with its own generator."""

    def __init__(
        self,
        volumes: Sequence[LabelledVolume],
        patch_size: Sequence[int],
        foreground_fraction: float,
        rng: np.random.Generator,
    ) -> None:
        if not volumes:
            raise DataError("no labelled training case to sample patches from")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.foreground_fraction = foreground_fraction
        self.rng = rng

    def _centre(self, volume: LabelledVolume) -> np.ndarray:
        if volume.centres and self.rng.random() < self.foreground_fraction:
            organ = volume.centres[self.rng.integers(len(volume.centres))]
            return organ[self.rng.integers(len(organ))]
        return np.array([self.rng.integers(d) for d in volume.shape])

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        volume = self.volumes[self.rng.integers(len(self.volumes))]
        centre = self._centre(volume)
        start = [int(c) - p // 2 for c, p in zip(centre, self.patch_size, strict=True)]
        return (
            padded_crop(volume.image, start, self.patch_size, 0.0),
            padded_crop(volume.target, start, self.patch_size, IGNORE_INDEX),
            padded_crop(volume.body_mask, start, self.patch_size, False),
            volume.annotated,
        )

    def batch(self, batch_size: int) -> PatchBatch:
        """image (B, C, X, Y, Z) float32, target (B, X, Y, Z) int64, body (B, X, Y, Z) bool,
        annotated (B, K) bool."""
        samples = [self.sample() for _ in range(batch_size)]
        return {
            "image": np.stack([s[0] for s in samples]),
            "target": np.stack([s[1] for s in samples]).astype(np.int64),
            "body": np.stack([s[2] for s in samples]),
            "annotated": np.stack([s[3] for s in samples]),
        }


__all__ = [
    "LabelledVolume",
    "PatchBatch",
    "PatchSampler",
    "as_channels",
    "labelled_volume",
    "remap_label",
]
