"""Frozen-feature cache for the linear probe: the backbone runs once per training case.

Why: a frozen backbone gives the same features for a voxel every time, so recomputing them on
every patch only costs time, and it also changes them. On a patch the fully convolutional FPN sees
zero padding a few voxels away at its coarse levels (a 48x48x16 patch of a 4-level FPN is 6x6x2
at level 3), while at test time the same voxel sits inside a 128^3 window or the whole volume.
On the demo phantoms that train/test mismatch cost the probe most of what pretraining gives
(docs/downstream.md, "Frozen-feature cache"). With the cache, the pyramid of every training case
is computed once on the whole volume, and training patches are cut out of the cached levels.

Alignment: the volume is padded at its far end to a multiple of ``2^(L-1)`` (image value 0, as
in the patch sampler and the sliding window), and patch starts are multiples of ``2^(L-1)``, so
a patch's level-i crop starts at ``start / 2^i`` exactly and ``upsample(level_i)`` lines up with
the voxels of the patch as it does on the full volume.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from voxssl.device import autocast
from voxssl.errors import ConfigError
from voxssl.eval.sampling import LabelledVolume, PatchBatch, PatchSampler
from voxssl.models.features import backbone_pyramid, pyramid_channels
from voxssl.transforms.crop import padded_crop
from voxssl.vocabulary import IGNORE_INDEX

log = logging.getLogger(__name__)

BYTES_PER_FEATURE = 4  # float32


def alignment(num_levels: int) -> int:
    """Voxels per coarsest-level cell: patch starts and padded shapes are multiples of it."""
    return 2 ** (num_levels - 1)


def padded_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    return tuple(int(math.ceil(s / factor) * factor) for s in shape)


def pyramid_bytes(shape: Sequence[int], level_channels: Sequence[int]) -> int:
    """Memory of one case's cached pyramid (float32, padded to the coarsest cell)."""
    padded = padded_shape(shape, alignment(len(level_channels)))
    voxels = int(np.prod(padded))
    return sum(c * voxels // 8**i for i, c in enumerate(level_channels)) * BYTES_PER_FEATURE


def check_patch_alignment(patch_size: Sequence[int], num_levels: int, field_name: str) -> None:
    factor = alignment(num_levels)
    if any(p % factor for p in patch_size):
        raise ConfigError(
            f"{field_name}: {list(patch_size)} must be a multiple of {factor} (2^(levels-1) for a {num_levels}-level "
            f"backbone) to cut patches from cached features; change it or set feature_cache: false"
        )


def decide_feature_cache(
    setting: bool | str,
    volumes: Sequence[LabelledVolume],
    level_channels: Sequence[int],
    max_gib: float,
    where: str,
) -> bool:
    """Whether to cache: ``true`` (error if over ``max_gib``), ``false``, or ``auto`` (fits -> yes)."""
    if setting is False:
        return False
    need = sum(pyramid_bytes(v.shape, level_channels) for v in volumes) / 2**30
    if need <= max_gib:
        log.info("feature cache: %.2f GiB for %d training cases", need, len(volumes))
        return True
    if setting is True:
        raise ConfigError(
            f"{where}: the frozen features of the {len(volumes)} training cases need {need:.1f} GiB, over "
            f"feature_cache_max_gib = {max_gib}; raise the limit or set feature_cache: auto / false"
        )
    log.warning(
        "feature cache off: %.1f GiB needed, feature_cache_max_gib is %s; features are recomputed per patch",
        need,
        max_gib,
    )
    return False


@torch.no_grad()
def compute_pyramid(
    backbone: nn.Module,
    image: np.ndarray,
    device: torch.device,
    amp: bool = False,
    features: str = "projected",
) -> list[np.ndarray]:
    """The backbone's pyramid (``features``: projected or raw, :mod:`voxssl.models.features`) of a
    whole (C, X, Y, Z) volume, padded to the coarsest cell: level i as float32
    (C_i, X_p / 2^i, Y_p / 2^i, Z_p / 2^i) on the CPU."""
    num_levels = len(pyramid_channels(backbone, features))
    padded = padded_shape(image.shape[1:], alignment(num_levels))
    volume = padded_crop(image, (0, 0, 0), padded, 0.0, dtype=np.float32)
    was_training = backbone.training
    backbone.eval()
    with autocast(device, amp):
        levels = backbone_pyramid(backbone, torch.from_numpy(volume)[None].to(device), features)
    backbone.train(was_training)
    return [level[0].float().cpu().numpy() for level in levels]


@dataclass
class CachedCase:
    """A training case with its cached pyramid (levels padded to the coarsest cell)."""

    volume: LabelledVolume
    levels: list[np.ndarray]


def cache_features(
    backbone: nn.Module,
    volumes: Sequence[LabelledVolume],
    device: torch.device,
    amp: bool = False,
    progress: bool = True,
    features: str = "projected",
) -> list[CachedCase]:
    from tqdm.auto import tqdm

    cached = []
    for volume in tqdm(
        volumes, desc="frozen features", unit="case", disable=not progress, leave=False
    ):
        cached.append(
            CachedCase(volume, compute_pyramid(backbone, volume.image, device, amp, features))
        )
    return cached


class CachedPatchSampler(PatchSampler):
    """:class:`PatchSampler`'s patches, as crops of the cached pyramid instead of the image.

    The same centre rule (foreground fraction, organ uniform then voxel); the start is rounded down
    to the coarsest cell and kept inside the (padded) volume where the volume is larger than the
    patch, so that the patch holds as many volume voxels as it can. Outside the volume: features 0, target
    IGNORE_INDEX, body False (never trained).
    """

    def __init__(
        self,
        cases: Sequence[CachedCase],
        patch_size: Sequence[int],
        foreground_fraction: float,
        rng: np.random.Generator,
    ) -> None:
        super().__init__([c.volume for c in cases], patch_size, foreground_fraction, rng)
        self.cases = list(cases)
        self.num_levels = len(self.cases[0].levels)
        self.factor = alignment(self.num_levels)
        check_patch_alignment(self.patch_size, self.num_levels, "patch_size")

    def aligned_start(self, centre: Sequence[int] | np.ndarray, shape: Sequence[int]) -> list[int]:
        """The cell-aligned start nearest to centring the patch on ``centre`` that still contains
        ``centre`` and, where the volume is larger than the patch, keeps the patch on the volume (it
        may reach less than one cell into the padding, which is cached too)."""
        f = self.factor
        starts = []
        for c, p, dim in zip(centre, self.patch_size, shape, strict=True):
            c = int(c)
            nearest = (c - p // 2 + f // 2) // f * f
            lowest = -((p - 1 - c) // f) * f  # smallest multiple of f that is > c - p
            highest = c // f * f
            last = max(0, -((p - dim) // f) * f)  # ceil((dim - p) / f) * f
            starts.append(min(max(nearest, lowest, 0), highest, last))
        return starts

    def sample_levels(self) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        case = self.cases[self.rng.integers(len(self.cases))]
        return self.crop_at(case, self.aligned_start(self._centre(case.volume), case.volume.shape))

    def crop_at(
        self, case: CachedCase, start: Sequence[int]
    ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
        """(levels, target, body, annotated) of the patch at ``start`` (a multiple of the cell)."""
        volume = case.volume
        levels = [
            padded_crop(
                level, [s // 2**i for s in start], [p // 2**i for p in self.patch_size], 0.0
            )
            for i, level in enumerate(case.levels)
        ]
        return (
            levels,
            padded_crop(volume.target, start, self.patch_size, IGNORE_INDEX),
            padded_crop(volume.body_mask, start, self.patch_size, False),
            volume.annotated,
        )

    def batch(self, batch_size: int) -> PatchBatch:
        """levels [(B, C_i, *patch / 2^i)], target (B, X, Y, Z) int64, body bool, annotated (B, K)."""
        samples = [self.sample_levels() for _ in range(batch_size)]
        return {
            "levels": [np.stack([s[0][i] for s in samples]) for i in range(self.num_levels)],
            "target": np.stack([s[1] for s in samples]).astype(np.int64),
            "body": np.stack([s[2] for s in samples]),
            "annotated": np.stack([s[3] for s in samples]),
        }


__all__ = [
    "CachedCase",
    "CachedPatchSampler",
    "alignment",
    "cache_features",
    "check_patch_alignment",
    "compute_pyramid",
    "decide_feature_cache",
    "pyramid_bytes",
]
