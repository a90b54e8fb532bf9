"""Plain 2D image folders (PNG, JPEG, DICOM): the layout of RadImageNet-style classification sets.

    root/<class name>/.../<image>.png|.jpg|.jpeg|.dcm      one sub-folder per class (any depth below)
    root/.../<image>                                       unlabelled images (pretraining)

Every image is read as one grey (H, W) float32 array in [0, 1]:

- 8-bit PNG / JPEG (already windowed for display, as in RadImageNet): value / 255; colour images
  are converted to grey (Pillow's ``L``: ITU-R 601 luma);
- 16-bit PNG: clipped to its 0.5 / 99.5 percentiles and scaled to [0, 1] (these exports rarely use
  the full 16-bit range);
- DICOM (:func:`voxssl.data.readers.read_dicom_image`): the file's VOI window when it has one,
  else the 0.5 / 99.5 percentiles.

A file that cannot be read raises :class:`~voxssl.errors.DataError` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxssl.data.readers import read_dicom_image
from voxssl.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
PERCENTILES = (0.5, 99.5)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in SUFFIXES and not path.name.startswith(".")


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file below ``root`` (recursively), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    return sorted(p for p in root.rglob("*") if is_image_file(p))


def _scale(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros_like(pixels, dtype=np.float32)
    return np.clip((pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _percentile_scale(pixels: np.ndarray) -> np.ndarray:
    low, high = np.percentile(pixels, PERCENTILES)
    return _scale(pixels, float(low), float(high))


def read_image_2d(path: str | os.PathLike) -> np.ndarray:
    """(H, W) float32 in [0, 1] (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        pixels, window = read_dicom_image(path)
        if window is not None:
            center, width = window
            return _scale(pixels, center - width / 2, center + width / 2)
        return _percentile_scale(pixels)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                return _percentile_scale(np.asarray(image, dtype=np.float32))
            if image.mode == "F":
                return _percentile_scale(np.asarray(image, dtype=np.float32))
            grey = image.convert("L")
            return np.asarray(grey, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise DataError(f"{path}: cannot read the image ({err})") from None


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    label: int  # index into the class names
    key: str  # path relative to the root (a stable id for folds and reports)


def class_names(root: str | os.PathLike) -> list[str]:
    """Sub-folders of ``root`` that hold at least one image, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    return sorted(
        child.name
        for child in root.iterdir()
        if child.is_dir() and not child.name.startswith(".") and any(list_images(child))
    )


def labelled_images(
    root: str | os.PathLike, classes: list[str] | None = None
) -> tuple[list[LabelledImage], list[str]]:
    """Images of ``root/<class>/`` with their class index; ``classes`` fixes the names and their
    order (default: every sub-folder with images, sorted). Images directly in ``root`` are ignored."""
    root = Path(root)
    found = class_names(root)
    names = list(classes) if classes else found
    missing = [name for name in names if name not in found]
    if missing:
        raise DataError(
            f"{root}: no images for class(es) {', '.join(missing)} (sub-folders with images: "
            f"{', '.join(found) or 'none'})"
        )
    if len(names) < 2:
        raise DataError(
            f"{root}: classification needs at least two classes (one sub-folder each), "
            f"found {', '.join(names) or 'none'}"
        )
    samples = [
        LabelledImage(path, index, path.relative_to(root).as_posix())
        for index, name in enumerate(names)
        for path in list_images(root / name)
    ]
    return samples, names


__all__ = [
    "SUFFIXES",
    "LabelledImage",
    "class_names",
    "is_image_file",
    "labelled_images",
    "list_images",
    "read_image_2d",
]
