"""Anatomical landmarks of a phantom: named points in voxel and world coordinates.

Three kinds, each with a known position in every phantom, so that "the same anatomical point in
another scan" has a ground truth (used by the landmark-matching benchmark of the voxel embedding):

* ``organ_centroid``: centre of mass of each organ's label (``<organ>_centroid``);
* ``vertebra``: centre of each vertebral body in the field of view, midway between two discs on
  the column's axis (``vertebra_00`` upwards). Phantom vertebrae carry no level identity (the
  spine is periodic and its phase random), so ``vertebra_03`` of two phantoms are not the same
  level; a match is judged against the nearest vertebral-body centre;
* ``junction``: points where structures meet or branch off: the pancreas centreline knots (head
  by the IVC, neck in front of the aorta, body, tail at the splenic hilum) and each renal hilum (the
  centre of the renal-sinus cut-out at the kidney's medial side, where the renal vessels and the
  pelvis branch into the kidney; it lies in the fat medial to the kidney). The phantoms draw no
  branching vessel tree (the aorta and IVC are unbranched tubes), so these are the branch-like
  points they have.

Shapes are evaluated at deformed coordinates (``x + d(x)``, see :class:`PhantomGrid`), so a point
``p`` of the shape frame appears at the grid position ``x`` with ``x + d(x) = p``; the smooth,
small deformation (a few mm over ~80 mm) makes the fixed-point iteration ``x <- p - d(x)``
converge in a few steps. Every landmark is checked to lie inside the volume; points outside the
field of view are dropped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxssl.errors import DataError
from voxssl.utils.triple import float_triple
from voxssl.vocabulary import organ_name

KINDS = ("organ_centroid", "vertebra", "junction")
LANDMARKS_FORMAT = "voxssl-phantom-landmarks"
LANDMARKS_VERSION = 1


@dataclass(frozen=True)
class Landmark:
    """One named point: ``voxel`` (fractional indices of the RAS-ordered phantom arrays) and
    ``world`` (RAS mm, through the phantom's affine)."""

    name: str
    kind: str
    voxel: tuple[float, float, float]
    world: tuple[float, float, float]


def _kind(name: str) -> str:
    if name.endswith("_centroid"):
        return "organ_centroid"
    if name.startswith("vertebra_"):
        return "vertebra"
    return "junction"


def shape_frame_to_grid(grid, points: np.ndarray, iterations: int = 30) -> np.ndarray:
    """Undeformed body-frame positions (mm) of shape-frame points (N, 3): solves ``x + d(x) = p``."""
    from scipy.ndimage import map_coordinates

    p = np.atleast_2d(np.asarray(points, dtype=np.float64))
    if grid.deformed is None or not len(p):
        return p
    origin = np.array([float(a[0]) for a in grid.coarse_axes])
    spacing = np.asarray(grid.coarse_spacing, dtype=np.float64)
    x = p.copy()
    for _ in range(iterations):
        index = ((x - origin) / spacing).T  # (3, N) coarse-grid indices
        # the undeformed coordinate is linear in the index, so interpolating the deformed
        # coordinates and subtracting x gives the interpolated displacement d(x)
        deformed = np.stack(
            [map_coordinates(c, index, order=1, mode="nearest") for c in grid.deformed], 1
        )
        previous, x = x, p - (deformed - x)
        if np.max(np.abs(x - previous)) < 1e-4:
            break
    return x


def grid_to_ras_voxel(grid, position_mm: np.ndarray) -> np.ndarray:
    """Fractional RAS voxel index of an undeformed body-frame position (x mirrored, see generate)."""
    shape = np.asarray(grid.shape, dtype=np.float64)
    spacing = np.asarray(grid.spacing, dtype=np.float64)
    index = np.asarray(position_mm, dtype=np.float64) / spacing + (shape - 1) / 2.0
    index[0] = shape[0] - 1 - index[0]  # body frame x points to the patient's left, RAS x right
    return index


def label_centroids(label: np.ndarray) -> dict[int, np.ndarray]:
    """Voxel centroid of every non-zero id of a uint8 label: per-slice histograms, one pass per axis."""
    label = np.asarray(label, dtype=np.uint8)
    sizes = np.bincount(label.ravel(), minlength=256)
    sums = []
    for axis in range(3):
        moved = np.moveaxis(label, axis, 0)
        per_slice = np.stack([np.bincount(s.ravel(), minlength=256) for s in moved])
        sums.append(np.arange(moved.shape[0], dtype=np.float64) @ per_slice)
    centroids = np.stack(sums, axis=1) / np.maximum(sizes, 1)[:, None]
    return {int(i): centroids[i] for i in np.flatnonzero(sizes) if i > 0}


def phantom_landmarks(
    grid, points: dict[str, tuple[float, float, float]], label: np.ndarray, affine: np.ndarray
) -> list[Landmark]:
    """Organ centroids from ``label`` (RAS order) and the anatomical ``points`` of the builder."""
    shape = np.asarray(label.shape)
    voxels: dict[str, np.ndarray] = {
        f"{organ_name(organ)}_centroid": centroid
        for organ, centroid in label_centroids(label).items()
    }
    names = list(points)
    positions = shape_frame_to_grid(grid, np.array([points[n] for n in names]).reshape(-1, 3))
    for name, position in zip(names, positions, strict=True):
        voxels[name] = grid_to_ras_voxel(grid, position)
    landmarks = []
    for name, voxel in voxels.items():
        if np.any(voxel < -0.5) or np.any(voxel > shape - 0.5):
            continue  # outside the field of view
        world = (np.asarray(affine, dtype=np.float64) @ np.append(voxel, 1.0))[:3]
        landmarks.append(
            Landmark(
                name=name,
                kind=_kind(name),
                voxel=float_triple(round(float(v), 4) for v in voxel),
                world=float_triple(round(float(v), 4) for v in world),
            )
        )
    return landmarks


def landmarks_document(
    landmarks: list[Landmark], stored_affine: np.ndarray | None = None, **extra: Any
) -> dict[str, Any]:
    """JSON-ready dict; ``voxel`` in the stored file's index space when ``stored_affine`` is given."""
    to_voxel = None if stored_affine is None else np.linalg.inv(np.asarray(stored_affine, float))
    entries = []
    for lm in landmarks:
        voxel: tuple[float, ...] = lm.voxel
        if to_voxel is not None:
            voxel = tuple(round(float(v), 4) for v in (to_voxel @ np.append(lm.world, 1.0))[:3])
        entries.append(
            {"name": lm.name, "kind": lm.kind, "world_mm": list(lm.world), "voxel": list(voxel)}
        )
    return {
        "format": LANDMARKS_FORMAT,
        "version": LANDMARKS_VERSION,
        "coordinates": "world_mm: RAS+ millimetres (the NIfTI's affine); voxel: fractional (i, j, k) "
        "indices of the stored image array",
        **extra,
        "landmarks": entries,
    }


def read_landmarks(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{name: {"kind", "world_mm", "voxel"}}`` from a landmarks JSON written with a phantom."""

    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable landmarks JSON ({err})") from None
    if document.get("format") != LANDMARKS_FORMAT:
        raise DataError(
            f"{path}: not a voxssl phantom landmarks file (format {document.get('format')!r})"
        )
    return {
        entry["name"]: {k: v for k, v in entry.items() if k != "name"}
        for entry in document["landmarks"]
    }


__all__ = [
    "KINDS",
    "Landmark",
    "label_centroids",
    "landmarks_document",
    "phantom_landmarks",
    "read_landmarks",
    "shape_frame_to_grid",
]
