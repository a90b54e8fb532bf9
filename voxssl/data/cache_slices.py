"""Axial slices of the preprocessed cache as 2D images, and per-slice labels derived from the masks.

A cached case is (X, Y, Z) in RAS order at the recipe's spacing with values in [0, 1]
(:mod:`voxssl.data.cache`); its axial slice ``z`` is the (X, Y) plane, returned as float32 (the
first channel of a multi-channel case). Slices whose body mask covers less than
``min_body_fraction`` of the plane (air above and below the patient) are left out.

Labels for slice classification count the voxels of each organ in a slice: "the slice contains the
liver" is ``count(liver) >= min_pixels``. A slice with voxels marked not-annotated (255) has no
reliable label and is skipped, as is a case whose label does not annotate the organ at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxssl.data.cache import CachedCase
from voxssl.vocabulary import IGNORE_INDEX


@dataclass(frozen=True)
class SliceRef:
    case: int  # index into the list of cases
    z: int


def body_fractions(case: CachedCase) -> np.ndarray:
    """(Z,) fraction of each axial slice inside the body mask."""
    return np.asarray(case.body_mask(), dtype=bool).mean(axis=(0, 1))


def axial_slices(cases: Sequence[CachedCase], min_body_fraction: float = 0.0) -> list[SliceRef]:
    """Every axial slice of ``cases`` with enough body in it, case by case, z ascending."""
    refs = []
    for index, case in enumerate(cases):
        fractions = body_fractions(case)
        refs += [SliceRef(index, int(z)) for z in np.flatnonzero(fractions >= min_body_fraction)]
    return refs


def read_axial_slice(case: CachedCase, z: int) -> np.ndarray:
    """(X, Y) float32 in [0, 1]."""
    image = case.image()
    plane = image[0, :, :, z] if image.ndim == 4 else image[:, :, z]
    return np.asarray(plane, dtype=np.float32)


def organ_counts(case: CachedCase, organs: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(counts (Z, len(organs)) int64, unknown (Z,) bool)``: voxels of each organ per slice, and
    the slices with not-annotated voxels (or with a label that does not annotate an organ)."""
    label = np.asarray(case.label())
    counts = np.stack([(label == organ).sum(axis=(0, 1)) for organ in organs], axis=1)
    unknown = (label == IGNORE_INDEX).any(axis=(0, 1))
    annotated = case.annotated
    if annotated is not None and any(organ not in annotated for organ in organs):
        unknown[:] = True
    return counts.astype(np.int64), unknown


__all__ = ["SliceRef", "axial_slices", "body_fractions", "organ_counts", "read_axial_slice"]
