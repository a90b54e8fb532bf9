"""CHAOS ground truth: one PNG per DICOM slice -> one 3D label image on the DICOM series' grid.

Contract (what the preprocessing reader relies on):

- :func:`read_dicom_series` reads every DICOM file of a folder as ONE series, ignoring the
  (inconsistent) series UIDs of the CHAOS files, with slices stacked by ``ImagePositionPatient``
  projected on the slice normal (ascending), never by file name. The result is a
  ``SimpleITK.Image`` whose origin, spacing and direction come from the DICOM tags, so it can be
  reoriented like any other image.
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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

TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"


@dataclass(frozen=True)
class DicomSlice:
    path: Path
    position: np.ndarray  # ImagePositionPatient (mm, LPS)
    row_direction: np.ndarray  # first three numbers of ImageOrientationPatient
    column_direction: np.ndarray
    spacing: tuple[float, float]  # (column spacing x, row spacing y), mm
    size: tuple[int, int]  # (columns, rows)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)


def dicom_files(dicom_dir: Path) -> list[Path]:
    """The DICOM files of a folder (``*.dcm``, or every non-hidden file when none ends in .dcm)."""
    dicom_dir = Path(dicom_dir)
    if not dicom_dir.is_dir():
        raise DataError(f"DICOM folder not found: {dicom_dir}")
    files = sorted(p for p in dicom_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    dcm = [p for p in files if p.suffix.lower() == ".dcm"]
    found = dcm or files
    if not found:
        raise DataError(f"{dicom_dir}: no DICOM files")
    return found


def read_slice_header(path: Path) -> DicomSlice:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DataError(
            f"{path}: not a readable DICOM file ({str(err).strip().splitlines()[-1]})"
        ) from None
    try:
        position = _numbers(reader.GetMetaData(TAG_POSITION), 3)
        orientation = _numbers(reader.GetMetaData(TAG_ORIENTATION), 6)
    except RuntimeError:
        raise DataError(
            f"{path}: no ImagePositionPatient / ImageOrientationPatient; cannot place the slice"
        ) from None
    spacing = reader.GetSpacing()
    size = reader.GetSize()
    return DicomSlice(
        path,
        position,
        orientation[:3],
        orientation[3:],
        (spacing[0], spacing[1]),
        (size[0], size[1]),
    )


def _numbers(text: str, count: int) -> np.ndarray:
    values = np.array([float(v) for v in text.strip().split("\\") if v.strip()], dtype=np.float64)
    if values.size != count:
        raise RuntimeError(text)
    return values


def slices_by_position(dicom_dir: Path) -> list[DicomSlice]:
    """Every slice of the folder, ordered by position along the slice normal (ascending)."""
    slices = [read_slice_header(path) for path in dicom_files(dicom_dir)]
    first = slices[0]
    for other in slices[1:]:
        if other.size != first.size or not np.allclose(other.normal, first.normal, atol=1e-3):
            raise DataError(
                f"{dicom_dir}: {other.path.name} has another size or orientation than {first.path.name}"
            )
    normal = first.normal
    slices.sort(key=lambda s: float(np.dot(s.position, normal)))
    depths = np.array([np.dot(s.position, normal) for s in slices])
    if len(slices) > 1 and np.min(np.diff(depths)) < 1e-4:
        i = int(np.argmin(np.diff(depths)))
        raise DataError(
            f"{dicom_dir}: {slices[i].path.name} and {slices[i + 1].path.name} are at the same position"
        )
    return slices


def _series_geometry(
    slices: list[DicomSlice],
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(origin, spacing, direction) of the stacked slices, in SimpleITK's conventions."""
    first = slices[0]
    normal = first.normal / np.linalg.norm(first.normal)
    if len(slices) > 1:
        depths = np.array([np.dot(s.position, normal) for s in slices])
        slice_spacing = float(np.median(np.diff(depths)))
    else:
        slice_spacing = 1.0
    direction = np.stack(
        [first.row_direction, first.column_direction, normal], axis=1
    )  # columns = axes
    spacing = (first.spacing[0], first.spacing[1], slice_spacing)
    return tuple(first.position.tolist()), spacing, tuple(direction.flatten().tolist())


def read_dicom_series(dicom_dir: Path):
    """All DICOM files of ``dicom_dir`` as one 3D ``SimpleITK.Image``, stacked by position."""
    import SimpleITK as sitk

    slices = slices_by_position(Path(dicom_dir))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in slices])
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(
            f"{dicom_dir}: cannot read the DICOM series ({str(err).strip().splitlines()[-1]})"
        ) from None
    origin, spacing, direction = _series_geometry(slices)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


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
    ct = all(CT_PNG_NAME.match(p.stem) for p in pngs)
    if ct:
        return {str(int(CT_PNG_NAME.match(p.stem).group(1))): p for p in pngs}, True
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
            ``dicom_dir`` stacked by position (:func:`read_dicom_series`'s grid).

    Raises:
        DataError: a slice without its PNG (or a PNG without its slice), a PNG of the wrong size.
    """
    import SimpleITK as sitk
    from PIL import Image

    ground_dir, dicom_dir = Path(ground_dir), Path(dicom_dir)
    slices = slices_by_position(dicom_dir)
    pngs, ct = _png_index(ground_dir)
    columns, rows = slices[0].size
    volume = np.zeros((len(slices), rows, columns), dtype=np.uint8)  # (z, y, x) as SimpleITK arrays
    for z, dicom_slice in enumerate(slices):
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
    label = sitk.GetImageFromArray(volume)
    origin, spacing, direction = _series_geometry(slices)
    label.SetOrigin(origin)
    label.SetSpacing(spacing)
    label.SetDirection(direction)
    if reference_image is None:
        return label
    return sitk.Resample(
        label, reference_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )


def read_case_label(case, reference_image):
    """:func:`read_chaos_label` for a CHAOS :class:`~voxssl.data.case.Case` (``label_format="chaos_png"``)."""
    from voxssl.data.adapters.chaos import LABEL_DICOM_DIR

    if case.label is None:
        raise ValueError(f"case {case.case_id} has no label")
    dicom_dir = case.metadata.get(LABEL_DICOM_DIR, case.image)
    return read_chaos_label(case.label, dicom_dir, reference_image)
