"""``generate_phantom``: one synthetic abdominal CT or MR volume with its organ label map."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from voxssl.data.phantoms.anatomy import build_anatomy
from voxssl.data.phantoms.appearance import render, sample_appearance
from voxssl.data.phantoms.grid import PhantomGrid
from voxssl.data.phantoms.landmarks import Landmark, phantom_landmarks
from voxssl.errors import ConfigError

logger = logging.getLogger(__name__)

#: Default grid: a 400 x 320 x 240 mm abdominal field of view, 2.5 x 2.5 x 5 mm voxels (~1 M voxels).
DEFAULT_SHAPE: tuple[int, int, int] = (160, 128, 48)
DEFAULT_SPACING: tuple[float, float, float] = (2.5, 2.5, 5.0)
DEFAULT_FIELD_OF_VIEW_MM: tuple[float, ...] = tuple(
    n * s for n, s in zip(DEFAULT_SHAPE, DEFAULT_SPACING, strict=True)
)
#: The smallest grid the anatomy is drawn on (the coarse grid needs a few voxels per axis).
MIN_SIZE = 8

Modality = Literal["ct", "mr"]


@dataclass(eq=False)
class Phantom:
    """A generated volume in RAS voxel order (x: patient right, y: anterior, z: superior).

    Attributes:
        image: float32 (X, Y, Z); Hounsfield units for CT, arbitrary positive units for MR.
        label: uint8 (X, Y, Z), canonical organ ids (:mod:`voxssl.vocabulary`), 0 = background.
        affine: 4x4 voxel-to-world (RAS+, mm), diagonal with the spacing.
        modality: ``ct`` or ``mr``.
        seed: the seed it was generated from (same seed + arguments = identical phantom).
        params: the sampled patient and acquisition settings (body size, contrast phase, ...).
        landmarks: named anatomical points (organ centroids, vertebral-body centres, junctions) in
            RAS voxel and world coordinates (:mod:`voxssl.data.phantoms.landmarks`).
    """

    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    modality: Modality
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    landmarks: list[Landmark] = field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        x, y, z = (float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        return x, y, z

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)


def check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"phantom seed must be an integer >= 0, got {seed!r}")


def resolve_grid(
    shape=None, spacing=None
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Fill in whichever of shape/spacing is missing so the field of view stays ~400x320x240 mm."""
    if shape is not None:
        shape = tuple(int(v) for v in shape)
        if len(shape) != 3 or min(shape) < MIN_SIZE:
            raise ConfigError(f"phantom shape must be 3 sizes >= {MIN_SIZE}, got {shape}")
    if spacing is not None:
        spacing = tuple(float(v) for v in spacing)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ConfigError(f"phantom spacing must be 3 positive sizes in mm, got {spacing}")
    if shape is None and spacing is None:
        return DEFAULT_SHAPE, DEFAULT_SPACING
    if spacing is None:
        in_plane = DEFAULT_FIELD_OF_VIEW_MM[0] / shape[0]
        spacing = (in_plane, in_plane, DEFAULT_FIELD_OF_VIEW_MM[2] / shape[2])
    if shape is None:
        shape = tuple(
            max(MIN_SIZE, round(fov / float(s)))
            for fov, s in zip(DEFAULT_FIELD_OF_VIEW_MM, spacing, strict=True)
        )
    return shape, spacing


def generate_phantom(seed: int, modality: Modality = "ct", shape=None, spacing=None) -> Phantom:
    """Draw one random abdomen (anatomy, contrast, texture, noise) from ``seed``.

    ``shape`` (X, Y, Z voxels) and ``spacing`` (mm) default to :data:`DEFAULT_SHAPE` /
    :data:`DEFAULT_SPACING`; given one, the other keeps the default field of view. Everything random
    comes from ``numpy.random.default_rng(seed)``: the result depends only on the arguments.
    """
    if modality not in ("ct", "mr"):
        raise ConfigError(f"phantom modality must be 'ct' or 'mr', got {modality!r}")
    check_seed(seed)
    shape, spacing = resolve_grid(shape, spacing)
    rng = np.random.default_rng(seed)
    grid = PhantomGrid(shape, spacing)
    structures, anatomy, points = build_anatomy(grid, rng, with_table=modality == "ct")
    appearance = sample_appearance(modality, rng)
    image, label = render(grid, structures, appearance, rng)
    # The body frame is drawn with x towards the patient's LEFT (radiological habit); RAS voxel order
    # has +x towards the patient's RIGHT, so mirror x once here (the liver ends up at +x, as in
    # real RAS scans).
    image, label = np.ascontiguousarray(image[::-1]), np.ascontiguousarray(label[::-1])
    affine = np.diag([*spacing, 1.0])
    # The field-of-view centre sits somewhere in scanner coordinates (table height and position).
    centre = np.array([rng.normal(0.0, 10.0), rng.normal(-20.0, 15.0), rng.uniform(-700.0, -100.0)])
    affine[:3, 3] = centre - np.array(spacing) * (np.array(shape) - 1) / 2.0
    params = {**anatomy, **appearance.settings}
    logger.debug("phantom seed=%d modality=%s shape=%s params=%s", seed, modality, shape, params)
    return Phantom(
        image=image,
        label=label,
        affine=affine,
        modality=modality,
        seed=int(seed),
        params=params,
        landmarks=phantom_landmarks(grid, points, label, affine),
    )
