"""CHAOS ground truth: one PNG per DICOM slice -> one 3D label image on the DICOM series' grid.

Contract (what the preprocessing reader relies on):

- the DICOM folder is read as ONE series with :mod:`voxssl.data.dicom`'s rules (the same as for
  the scan itself): slices stacked by ``ImagePositionPatient`` along the slice normal, never by
  file name, ignoring the (inconsistent) series UIDs of the CHAOS files;
- :func:`read_chaos_label` returns a ``SimpleITK.Image`` (uint8, canonical organ ids) with exactly
  the geometry of ``reference_image`` (the series as the reader read it): the PNGs are stacked in
  the same position order, given the series' physical geometry, then resampled with nearest
  neighbour onto ``reference_image``'s grid (an identity copy when the grids agree). Reorient the
  label exactly like the image and they stay voxel-aligned.
- PNG pixel (row r, column c) is DICOM pixel (row r, column c) of the matching slice; the PNG's
  shape must equal the slice's (rows, columns).

PNG <-> DICOM correspondence: CT PNGs ``liver_GT_045.png`` match the DICOM whose file name carries
index 45 (``i0045,0000b.dcm``); MR PNGs share the DICOM's stem (``IMG-0004-00010``). T1DUAL Ground
follows the InPhase numbering: for OutPhase, pass the InPhase folder as ``dicom_dir`` and the
OutPhase image as ``reference_image`` (the label moves across by physical position).

Decoding: CT Ground is binary (>= 128 -> liver, 6). MR grey values are decoded by ranges, because
some files are resampled or anti-aliased: 55-70 liver (6), 110-135 right kidney (2), 175-200 left
kidney (3), 240-255 spleen (1), anything else background.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from voxssl.data.adapters.chaos import LABEL_DICOM_DIR
from voxssl.data.dicom import read_series_layout, with_series_geometry
from voxssl.errors import DataError

#: (low, high, canonical id) for the MR Ground grey values, inclusive ranges.
MR_GREY_RANGES: tuple[tuple[int, int, int], ...] = (
    (55, 70, 6),
    (110, 135, 2),
    (175, 200, 3),
    (240, 255, 1),
)
CT_LIVER_THRESHOLD = 128
CT_LIVER_ID = 6
CT_PNG_NAME = re.compile(r"^liver_GT_(\d+)$", re.IGNORECASE)
CT_DICOM_INDEX = re.compile(r"^i?(\d+)")


def decode_png(values: np.ndarray, ct: bool) -> np.ndarray:
    """Ground PNG grey values -> canonical organ ids (uint8)."""
    label = np.zeros(values.shape, dtype=np.uint8)
    if ct:
        label[values >= CT_LIVER_THRESHOLD] = CT_LIVER_ID
        return label
    for low, high, organ in MR_GREY_RANGES:
        label[(values >= low) & (values <= high)] = organ
    return label


def _png_index(ground_dir: Path) -> tuple[dict[str, Path], bool]:
    """PNG key -> path, and whether this is CT Ground (``liver_GT_NNN``: key = the number)."""
    pngs = sorted(
        p
        for p in Path(ground_dir).iterdir()
        if p.suffix.lower() == ".png" and not p.name.startswith(".")
    )
    if not pngs:
        raise DataError(f"{ground_dir}: no PNG ground-truth files")
    ct_numbers = [CT_PNG_NAME.match(p.stem) for p in pngs]
    if all(ct_numbers):
        return {str(int(m.group(1))): p for m, p in zip(ct_numbers, pngs, strict=True) if m}, True
    return {p.stem: p for p in pngs}, False


def _dicom_key(path: Path, ct: bool) -> str:
    if not ct:
        return path.stem
    match = CT_DICOM_INDEX.match(path.stem)
    if match is None:
        raise DataError(
            f"{path}: cannot read the slice index from the file name (expected i0045,0000b.dcm)"
        )
    return str(int(match.group(1)))


def read_chaos_label(ground_dir: Path, dicom_dir: Path, reference_image=None):
    """The 3D label of a CHAOS series as a ``SimpleITK.Image`` (uint8, canonical ids).

    Args:
        ground_dir: the ``Ground`` folder of PNGs.
        dicom_dir: the DICOM folder whose file names the PNGs follow (InPhase for T1DUAL).
        reference_image: the image the label must match (the series as the reader read it); the
            label is resampled (nearest neighbour) onto its grid. None keeps the grid of
            ``dicom_dir`` stacked by position (:func:`voxssl.data.dicom.read_series_image`'s grid).

    Raises:
        DataError: a slice without its PNG (or a PNG without its slice), a PNG of the wrong size.
    """
    ground_dir, dicom_dir = Path(ground_dir), Path(dicom_dir)
    series = read_series_layout(dicom_dir)
    pngs, ct = _png_index(ground_dir)
    columns, rows, depth = series.shape
    volume = np.zeros((depth, rows, columns), dtype=np.uint8)  # (z, y, x) as SimpleITK arrays
    for z, dicom_slice in enumerate(series.slices):
        key = _dicom_key(dicom_slice.path, ct)
        png = pngs.pop(key, None)
        if png is None:
            raise DataError(
                f"{ground_dir}: no ground-truth PNG for DICOM slice {dicom_slice.path.name}"
            )
        with Image.open(png) as handle:
            values = np.asarray(handle.convert("L"))
        if values.shape != (rows, columns):
            raise DataError(
                f"{png}: {values.shape[1]}x{values.shape[0]} pixels, the DICOM slice is {columns}x{rows}"
            )
        volume[z] = decode_png(values, ct)
    if pngs:
        raise DataError(
            f"{ground_dir}: {next(iter(pngs.values())).name} matches no DICOM file in {dicom_dir}"
        )
    label = with_series_geometry(sitk.GetImageFromArray(volume), series)
    if reference_image is None:
        return label
    return sitk.Resample(
        label, reference_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )


def read_case_label(case, reference_image):
    """:func:`read_chaos_label` for a CHAOS :class:`~voxssl.data.case.Case` (``label_format="chaos_png"``)."""
    if case.label is None:
        raise ValueError(f"case {case.case_id} has no label")
    dicom_dir = case.metadata.get(LABEL_DICOM_DIR, case.image)
    return read_chaos_label(case.label, dicom_dir, reference_image)
