"""PNG overlays of a few axial slices per case: image | reference | prediction (pillow only), and
the preview ``voxssl predict`` writes beside each prediction: axial | coronal | sagittal slices
through the predicted organs, at their true aspect ratio, with a legend.

Slices are shown in the radiological convention from RAS arrays: patient right on the left of the
picture, anterior at the top (axial), superior at the top (coronal, sagittal). Organs get fixed
colours from a table indexed by canonical id, so a colour means the same organ in every overlay.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxssl.utils.atomic import atomic_path
from voxssl.vocabulary import IGNORE_INDEX, organ_name
from voxssl.vocabulary import ORGANS as ORGAN_NAMES_KNOWN

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
#: The preview's panels are enlarged (whole factors) until the tallest is at least this many pixels.
PREVIEW_MIN_HEIGHT = 256


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


def _grey(image_xy: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    img = np.asarray(image_xy, dtype=np.float32)
    if value_range is not None:
        lo, hi = value_range
    else:
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


def preview_picture(
    image: np.ndarray, label: np.ndarray, spacing: Sequence[float], legend: bool = True
) -> np.ndarray:
    """RGB array: axial | coronal | sagittal slices (RAS arrays (X, Y, Z) on one grid) through the
    centre of the labelled voxels (the volume's centre when there are none), each resampled to
    square millimetres, with a legend of the organs shown."""
    from PIL import Image

    if image.ndim == 4:  # multi-channel: show the first channel
        image = image[0]
    image = np.asarray(image)
    label = np.asarray(label)
    found = np.argwhere((label > 0) & (label != IGNORE_INDEX))
    centre = np.median(found, axis=0).astype(int) if len(found) else np.array(label.shape) // 2
    x, y, z = (int(c) for c in centre)
    sx, sy, sz = (float(s) for s in spacing)
    views = [  # (image slice, label slice, mm per row, mm per column)
        (image[:, :, z], label[:, :, z], sy, sx),
        (image[:, y, :], label[:, y, :], sz, sx),
        (image[x, :, :], label[x, :, :], sz, sy),
    ]
    grey_scale = _grey_range(image)
    unit = min(sx, sy, sz)  # mm per picture pixel: the finest spacing ...
    tallest = max(v[0].shape[1] * v[2] for v in views) / unit
    unit /= max(1, int(np.ceil(PREVIEW_MIN_HEIGHT / tallest)))  # ... enlarged for small scans
    panels = []
    for image_2d, label_2d, row_mm, col_mm in views:
        panel = _blend(_grey(_display(image_2d), grey_scale), _display(label_2d))
        rows, cols = panel.shape[:2]
        size = (max(1, round(cols * col_mm / unit)), max(1, round(rows * row_mm / unit)))
        panels.append(np.asarray(Image.fromarray(panel).resize(size, Image.Resampling.NEAREST)))
    height = max(p.shape[0] for p in panels)
    padded = [
        np.concatenate([p, np.zeros((height - p.shape[0], p.shape[1], 3), np.uint8)])
        for p in panels
    ]
    separator = np.full((height, 2, 3), 255, np.uint8)
    picture = np.concatenate([padded[0], separator, padded[1], separator, padded[2]], axis=1)
    if legend:
        picture = _with_legend(
            picture, sorted({int(v) for v in np.unique(label)} - {0, IGNORE_INDEX})
        )
    return picture


def _grey_range(image: np.ndarray) -> tuple[float, float]:
    step = max(1, int(np.ceil((image.size / 1_000_000) ** (1 / 3))))
    sample = np.asarray(image[::step, ::step, ::step], dtype=np.float32)
    low, high = np.percentile(sample, (0.5, 99.5)) if sample.size else (0.0, 1.0)
    return float(low), float(high)


def _with_legend(picture: np.ndarray, organs: Sequence[int]) -> np.ndarray:
    """A black strip under the picture: a colour square and the name of every organ shown."""
    from PIL import Image, ImageDraw

    line = 14
    width = picture.shape[1]
    entries = [organ_name(o) if o in ORGAN_NAMES_KNOWN else f"class {o}" for o in organs] or [
        "no organ found"
    ]
    per_row = max(1, width // 150)
    rows = (len(entries) + per_row - 1) // per_row
    strip = Image.new("RGB", (width, rows * line + 4), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for index, name in enumerate(entries):
        left, top = (index % per_row) * 150 + 4, (index // per_row) * line + 2
        if organs:
            colour = tuple(int(v) for v in ORGAN_COLOURS[organs[index] % len(ORGAN_COLOURS)])
            draw.rectangle([left, top + 2, left + 9, top + 11], fill=colour)
        draw.text((left + 14, top), name, fill=(255, 255, 255))
    return np.concatenate([picture, np.asarray(strip)], axis=0)


def write_preview(path: Path, volume, label: np.ndarray) -> Path:
    """Write the preview PNG of a prediction atomically.

    Args:
        volume: the scan as read (:class:`voxssl.data.volume.Volume`, RAS voxels and spacing).
        label: the prediction on the scan's own grid, in the file's axis order (what is written
            to the NIfTI); it is reoriented to RAS like the scan.
    """
    import nibabel as nib
    from PIL import Image

    ras_label = nib.orientations.apply_orientation(np.asarray(label), volume.orientation)
    rgb = preview_picture(volume.data, ras_label, volume.spacing)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG")
    return Path(path)


__all__ = [
    "ORGAN_COLOURS",
    "choose_slices",
    "overlay_rows",
    "preview_picture",
    "write_overlay",
    "write_preview",
]
