"""Procedural abdominal CT / MR phantoms with organ labels: voxssl's built-in data.

Every pipeline, test and the README demo runs on these when no real data is at hand. They are
random patients, not a fixed template: anatomy, contrast, texture and noise vary with the seed, and
organs overlap in intensity so that segmenting them needs shape and context. See docs/phantoms.md.

    >>> from voxssl.data.phantoms import generate_phantom, write_phantom_dataset
    >>> phantom = generate_phantom(seed=0, modality="ct")          # RAS arrays + affine
    >>> paths = write_phantom_dataset("phantoms_ct", n=8, modality="ct", seed=0)
"""

from voxssl.data.phantoms.anatomy import PHANTOM_ORGANS
from voxssl.data.phantoms.generate import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    Phantom,
    generate_phantom,
    resolve_grid,
)
from voxssl.data.phantoms.writer import (
    ORIENTATIONS,
    case_name,
    case_seeds,
    reorient,
    write_phantom,
    write_phantom_dataset,
)

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "ORIENTATIONS",
    "PHANTOM_ORGANS",
    "Phantom",
    "case_name",
    "case_seeds",
    "generate_phantom",
    "reorient",
    "resolve_grid",
    "write_phantom",
    "write_phantom_dataset",
]
