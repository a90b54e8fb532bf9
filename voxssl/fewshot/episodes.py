"""Superpixel self-supervision episodes (SSL-ALPNet) and the Setting 1 / Setting 2 slice filters.

An episode: one random training slice and one random superpixel of it. Support = (slice,
superpixel mask); query = the augmented slice with the same augmentation applied to the mask.
1-way 1-shot, batch 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from voxssl.fewshot.augment import EpisodeAugment
from voxssl.fewshot.slices import SliceVolume


def training_slice_mask(
    label: np.ndarray | None, depth: int, test_classes: list[int], setting: int
) -> np.ndarray:
    """Slices usable for training: (Z,) bool.

    Setting 2 (Ouyang et al.) removes every slice that contains any pixel of a test class, so the
    network never sees a test organ, not even unlabelled. Setting 1 keeps every slice. A case
    without a label cannot be checked and keeps every slice.
    """
    keep = np.ones(depth, dtype=bool)
    if setting == 2 and label is not None and test_classes:
        keep &= ~np.isin(np.asarray(label), np.asarray(test_classes)).any(axis=(0, 1))
    return keep


@dataclass
class Episode:
    support: torch.Tensor  # (1, 3, S, S)
    support_label: torch.Tensor  # (1, S, S) uint8 {0, 1}
    query: torch.Tensor  # (1, 3, S, S)
    query_label: torch.Tensor  # (1, S, S) uint8 {0, 1}
    case: str
    z: int


@dataclass
class EpisodeSource:
    """One training volume: its slice view, superpixels (S, S, Z) and usable slices (Z,) bool."""

    key: str
    volume: SliceVolume
    superpixels: np.ndarray
    usable: np.ndarray


class SuperpixelEpisodes:
    """Draws episodes uniformly over usable (volume, slice) pairs that hold a superpixel."""

    def __init__(
        self, sources: list[EpisodeSource], augment: EpisodeAugment, min_pixels: int = 1
    ) -> None:
        self.sources = sources
        self.augment = augment
        self.min_pixels = min_pixels
        self.slots = [
            (index, z)
            for index, source in enumerate(sources)
            for z in np.flatnonzero(source.usable)
            if self._labels(source, int(z)).size
        ]
        if not self.slots:
            raise ValueError("no training slice with a superpixel (after the Setting 2 exclusion)")

    def _labels(self, source: EpisodeSource, z: int) -> np.ndarray:
        ids, counts = np.unique(source.superpixels[:, :, z], return_counts=True)
        return ids[(ids > 0) & (counts >= self.min_pixels)]

    def __len__(self) -> int:
        return len(self.slots)

    def sample(self, rng: np.random.Generator) -> Episode:
        index, z = (int(v) for v in self.slots[int(rng.integers(len(self.slots)))])
        source = self.sources[index]
        chosen = int(rng.choice(self._labels(source, z)))
        image = source.volume.slice(z)
        mask = torch.from_numpy((source.superpixels[:, :, z] == chosen).astype(np.uint8))
        height, width = image.shape[-2:]
        draw = self.augment.randomize(rng, (height, width))
        query, (query_mask,) = self.augment.apply(draw, image, [mask])
        return Episode(image[None], mask[None], query[None], query_mask[None], source.key, z)


__all__ = ["Episode", "EpisodeSource", "SuperpixelEpisodes", "training_slice_mask"]
