"""Implicit shape primitives: functions of body-frame coordinates (mm), negative inside.

The raw primitives are level sets (``r - 1`` of an ellipsoid, ...); :func:`as_distance` turns any of
them into an approximate signed distance in mm by dividing by the gradient norm, so that unions,
intersections, insets ("5 mm inside the liver") and partial-volume ramps all work in millimetres.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from voxssl.data.phantoms.grid import PhantomGrid

Vec3 = Sequence[float]  # (x, y, z)
#: a number, or an array of them that varies over the grid (a radius that changes with z)
Field = float | np.ndarray


def rotation(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """Rotation about z (yaw), then x (pitch), then y (roll); columns are the local axes."""
    a, b, c = np.deg2rad([yaw_deg, pitch_deg, roll_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ rx @ ry


def _local(coords, center: Vec3, rot: np.ndarray | None):
    d = [c - np.float32(o) for c, o in zip(coords, center, strict=True)]
    if rot is None:
        return d
    return [sum(d[i] * np.float32(rot[i, j]) for i in range(3)) for j in range(3)]


def ellipsoid(
    coords, center: Vec3, radii: Vec3, rot: np.ndarray | None = None, power: float = 2.0
) -> np.ndarray:
    """Super-ellipsoid level set ``r - 1`` (power 2: ellipsoid; larger: boxier)."""
    local = _local(coords, center, rot)
    total = sum(np.abs(d / np.float32(r)) ** power for d, r in zip(local, radii, strict=True))
    return total ** (1.0 / power) - 1.0


def elliptic_cylinder(
    coords, center_xy: tuple[Field, Field], radii_xy: tuple[Field, Field], power: float = 2.0
):
    """Infinite cylinder along z with a (super-)elliptic cross-section; ``center``/``radii`` may vary with z."""
    x, y, _ = coords
    total = (
        np.abs((x - center_xy[0]) / radii_xy[0]) ** power
        + np.abs((y - center_xy[1]) / radii_xy[1]) ** power
    )
    return total ** (1.0 / power) - 1.0


def polyline_tube(coords, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Signed distance (mm) to a tube around a polyline whose radius is linear along each segment."""
    x, y, z = coords
    best = np.full(np.broadcast(x, y, z).shape, np.inf, dtype=np.float32)
    for (p, q), (rp, rq) in zip(
        itertools.pairwise(points),
        itertools.pairwise(radii),
        strict=True,
    ):
        seg = q - p
        length2 = float(seg @ seg)
        t = ((x - p[0]) * seg[0] + (y - p[1]) * seg[1] + (z - p[2]) * seg[2]) / length2
        t = np.clip(t, 0.0, 1.0)
        dist = np.sqrt(
            (x - p[0] - t * seg[0]) ** 2
            + (y - p[1] - t * seg[1]) ** 2
            + (z - p[2] - t * seg[2]) ** 2
        )
        np.minimum(best, dist - (rp + t * (rq - rp)), out=best)
    return best


def smooth_union(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two distance fields with a fillet of size ``k`` mm (polynomial smooth minimum)."""
    h = np.clip(k - np.abs(a - b), 0.0, None) / k
    return np.minimum(a, b) - h * h * k * 0.25


def as_distance(grid: PhantomGrid, level_set: np.ndarray) -> np.ndarray:
    """First-order signed distance ``g / |grad g|`` in mm (exact at the surface, monotone off it)."""
    norm = grid.gradient_norm(level_set)
    return (level_set / np.maximum(norm, 1e-3)).astype(np.float32)
