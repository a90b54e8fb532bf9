"""PNG overlays of a few axial slices per case: image | reference | prediction (pillow only).

Slices are shown in the radiological convention from RAS arrays: patient right on the left of the
picture, anterior at the top. Organs get fixed colours from a table indexed by canonical id, so a
colour means the same organ in every overlay.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxssl.utils.atomic import atomic_path
from voxssl.vocabulary import IGNORE_INDEX

#: RGB per canonical organ id (0 = background, unused).
ORGAN_COLOURS = np.array(
    [
        (0, 0, 0),
        (255, 99, 71),  # 1 spleen
        (65, 105, 225),  # 2 right kidney
        (30, 144, 255),  # 3 left kidney
        (50, 205, 50),  # 4 gallbladder
        (255, 215, 0),  # 5 esophagus
        (210, 105, 30),  # 6 liver
        (255, 140, 0),  # 7 stomach
        (220, 20, 60),  # 8 aorta
        (138, 43, 226),  # 9 inferior vena cava
        (0, 206, 209),  # 10 portal / splenic vein
        (255, 105, 180),  # 11 pancreas
        (154, 205, 50),  # 12 right adrenal
        (107, 142, 35),  # 13 left adrenal
        (244, 164, 96),  # 14 duodenum
        (0, 191, 255),  # 15 bladder
        (199, 21, 133),  # 16 prostate / uterus
        (245, 245, 220),  # 17 vertebrae
        (178, 34, 34),  # 18 body-wall muscle
        (238, 232, 170),  # 19 fat
    ],
    dtype=np.uint8,
)

OVERLAY_ALPHA = 0.45


def choose_slices(reference: np.ndarray, count: int) -> list[int]:
    """``count`` axial (z) indices spread over the reference's foreground (or the whole volume)."""
    fg = (reference > 0) & (reference != IGNORE_INDEX)
    z_any = np.flatnonzero(fg.any(axis=(0, 1)))
    lo, hi = (z_any[0], z_any[-1]) if z_any.size else (0, reference.shape[2] - 1)
    inner = sorted({int(np.rint(p)) for p in np.linspace(lo, hi, count + 2)[1:-1]})
    if len(inner) < min(count, hi - lo + 1):  # thin foreground: include its first and last slices
        inner = sorted({int(np.rint(p)) for p in np.linspace(lo, hi, count)})
    return inner


def _display(slice_xy: np.ndarray) -> np.ndarray:
    """(X, Y) RAS slice -> (rows, cols) picture: anterior up, patient right on the left."""
    return slice_xy[::-1, ::-1].T


def _grey(image_xy: np.ndarray) -> np.ndarray:
    img = np.asarray(image_xy, dtype=np.float32)
    lo, hi = np.percentile(img, (0.5, 99.5)) if img.size else (0.0, 1.0)
    scaled = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return np.repeat((scaled * 255).astype(np.uint8)[..., None], 3, axis=-1)


def _blend(grey: np.ndarray, label: np.ndarray) -> np.ndarray:
    label = np.where(label == IGNORE_INDEX, 0, label).astype(np.int64)
    colours = ORGAN_COLOURS[np.clip(label, 0, len(ORGAN_COLOURS) - 1)]
    mask = (label > 0)[..., None]
    out = grey.astype(np.float32) * np.where(mask, 1 - OVERLAY_ALPHA, 1.0) + colours * np.where(
        mask, OVERLAY_ALPHA, 0.0
    )
    return out.astype(np.uint8)


def overlay_rows(
    image: np.ndarray, reference: np.ndarray | None, prediction: np.ndarray, slices: Sequence[int]
) -> np.ndarray:
    """RGB array: one row per slice, columns image | reference (if any) | prediction."""
    rows = []
    for z in slices:
        grey = _grey(_display(image[:, :, z]))
        panels = [grey]
        if reference is not None:
            panels.append(_blend(grey, _display(reference[:, :, z])))
        panels.append(_blend(grey, _display(prediction[:, :, z])))
        separator = np.full((grey.shape[0], 2, 3), 255, np.uint8)
        rows.append(
            np.concatenate([p for panel in panels for p in (panel, separator)][:-1], axis=1)
        )
    return np.concatenate(rows, axis=0)


def write_overlay(
    path: Path,
    image: np.ndarray,
    prediction: np.ndarray,
    reference: np.ndarray | None = None,
    num_slices: int = 3,
) -> Path:
    """Write the overlay PNG of a case (arrays (X, Y, Z) in RAS on one grid) atomically."""
    from PIL import Image

    if image.ndim == 4:  # multi-channel: show the first channel
        image = image[0]
    slices = choose_slices(reference if reference is not None else prediction, num_slices)
    rgb = overlay_rows(
        np.asarray(image),
        None if reference is None else np.asarray(reference),
        np.asarray(prediction),
        slices,
    )
    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG")
    return Path(path)


__all__ = ["ORGAN_COLOURS", "choose_slices", "overlay_rows", "write_overlay"]
