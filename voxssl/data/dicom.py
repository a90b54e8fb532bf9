"""DICOM series folders: which files are slices, what their headers say, how they stack.

One set of rules for every DICOM reader of voxssl (scans for preprocessing and ``voxssl predict``
in :mod:`voxssl.data.readers`, the CHAOS ground truth in :mod:`voxssl.data.chaos_png`):

* **files**: every regular file of the folder, sorted by name, except hidden files (``.*``,
  macOS ``._*``) and the names that are never slices (DICOMDIR, Thumbs.db, LOCKFILE, VERSION);
* **header**: ImagePositionPatient (0020,0032), ImageOrientationPatient (0020,0037) and
  PixelSpacing (0028,0030) place each slice; a file without them is an error naming the file
  and the tag (never a guess from SliceThickness or the file name);
* **order**: all files form ONE series stacked by position along the slice normal (row x column
  direction), not by file name and not by GDCM's series grouping, because some archives (CHAOS)
  carry inconsistent series UIDs. The slices must share orientation and size; two slices at one
  position, or gaps that are not one step, mean several series in one folder (or missing
  slices), and are errors that say which.

Every problem raises :class:`~voxssl.errors.DataError` naming the folder or file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxssl.errors import DataError

#: Folder entries that are never slices.
SKIP_NAMES = frozenset({"DICOMDIR", "Thumbs.db", "LOCKFILE", "VERSION"})
#: Relative spread of the slice gaps (positions along the normal) above which a series is refused.
MAX_SLICE_GAP_SPREAD = 0.05

TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"
TAG_PIXEL_SPACING = "0028|0030"


@dataclass(frozen=True)
class DicomSlice:
    path: Path
    position: np.ndarray  # ImagePositionPatient: the first pixel's centre, mm, LPS
    row_direction: np.ndarray  # ImageOrientationPatient[:3]: along a row (the column index grows)
    column_direction: np.ndarray  # ImageOrientationPatient[3:]: down a column
    pixel_spacing: tuple[float, float]  # PixelSpacing: (between rows, between columns), mm
    size: tuple[int, int]  # (columns, rows)

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)


@dataclass(frozen=True)
class DicomSeries:
    """The slices of one folder, stacked by position along the normal (checked, ascending)."""

    folder: Path
    slices: list[DicomSlice]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(columns, rows, slices): the array order of :func:`read_series_array`."""
        columns, rows = self.slices[0].size
        return columns, rows, len(self.slices)

    def depths(self) -> np.ndarray:
        """Position of every slice along the normal, mm (ascending)."""
        normal = self.slices[0].normal
        return np.array([float(np.dot(s.position, normal)) for s in self.slices])

    def lps_affine(self) -> np.ndarray:
        """4x4 affine from voxel (column, row, slice) to LPS mm, from the tags alone; the slice
        step is the mean step between the first and last positions (never SliceThickness)."""
        first = self.slices[0]
        row_spacing, column_spacing = first.pixel_spacing
        affine = np.eye(4)
        affine[:3, 0] = first.row_direction * column_spacing  # along a row: the column index grows
        affine[:3, 1] = first.column_direction * row_spacing
        if len(self.slices) > 1:
            affine[:3, 2] = (self.slices[-1].position - first.position) / (len(self.slices) - 1)
        else:
            affine[:3, 2] = first.normal
        affine[:3, 3] = first.position
        return affine


def dicom_files(folder: Path) -> list[Path]:
    """The candidate slice files of ``folder`` (see the module docstring), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"DICOM folder not found: {folder}")
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name not in SKIP_NAMES
    )


def read_slice_header(path: Path) -> DicomSlice:
    """The placement of one slice, from its header only (no pixel data is read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        position = _tag_numbers(reader, TAG_POSITION, 3)
        orientation = _tag_numbers(reader, TAG_ORIENTATION, 6)
        pixel_spacing = _tag_numbers(reader, TAG_PIXEL_SPACING, 2)
    except RuntimeError as err:
        raise DataError(
            f"{path}: not a readable DICOM file ({str(err).strip().splitlines()[-1]})"
        ) from None
    except KeyError as tag:
        raise DataError(
            f"{path}: DICOM tag {tag} is missing; cannot place the slice in space"
        ) from None
    size = reader.GetSize()
    return DicomSlice(
        path=Path(path),
        position=position,
        row_direction=orientation[:3],
        column_direction=orientation[3:],
        pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])),
        size=(int(size[0]), int(size[1])),
    )


def read_series_layout(folder: Path) -> DicomSeries:
    """Every slice of ``folder``, checked to form one series and ordered along the normal."""
    folder = Path(folder)
    files = dicom_files(folder)
    if not files:
        raise DataError(f"{folder}: the folder holds no DICOM file")
    slices = [read_slice_header(path) for path in files]
    first = slices[0]
    for other in slices[1:]:
        if not (
            np.allclose(other.row_direction, first.row_direction, atol=1e-4)
            and np.allclose(other.column_direction, first.column_direction, atol=1e-4)
        ):
            raise DataError(
                f"{other.path}: ImageOrientationPatient differs from {first.path.name}; "
                "the folder mixes series"
            )
        if other.size != first.size:
            raise DataError(
                f"{other.path}: slice size {other.size} differs from {first.path.name}'s {first.size}"
            )
    normal = first.normal
    order = np.argsort([float(np.dot(s.position, normal)) for s in slices], kind="stable")
    series = DicomSeries(folder, [slices[i] for i in order])
    if len(series.slices) > 1:
        _check_gaps(series)
    return series


def read_series_image(series: DicomSeries) -> sitk.Image:
    """The pixels of ``series`` as a 3D ``SimpleITK.Image`` whose origin, spacing and direction
    come from the tags (the slices in the series' order, whatever GDCM thinks of their UIDs)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(s.path) for s in series.slices])
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(
            f"{series.folder}: cannot decode the DICOM pixel data "
            f"({str(err).strip().splitlines()[-1]})"
        ) from None
    return with_series_geometry(image, series)


def with_series_geometry(image: sitk.Image, series: DicomSeries) -> sitk.Image:
    """Set ``image``'s origin, spacing and direction to ``series``' (an image on its grid)."""
    affine = series.lps_affine()
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    image.SetOrigin(tuple(affine[:3, 3].tolist()))
    image.SetSpacing(tuple(spacing.tolist()))
    image.SetDirection(tuple((affine[:3, :3] / spacing).flatten().tolist()))
    return image


def _check_gaps(series: DicomSeries) -> None:
    names = [s.path.name for s in series.slices]
    steps = np.diff(series.depths())
    if np.any(np.abs(steps) < 1e-4):
        i = int(np.argmin(np.abs(steps)))
        raise DataError(
            f"{series.folder}: {names[i]} and {names[i + 1]} lie at the same position; "
            "the folder mixes several series (put each series in its own folder)"
        )
    if np.ptp(steps) > MAX_SLICE_GAP_SPREAD * np.median(steps):
        raise DataError(_uneven_gaps_message(series.folder, names, steps))


def _uneven_gaps_message(folder: Path, names: list[str], steps: np.ndarray) -> str:
    """Missing slices leave gaps that are whole multiples of the series' step; gaps that are not
    (0.7 / 1.3 / 0.7 mm ...) come from several series interleaved in one folder."""
    step = float(steps.min())
    multiples = steps / step
    if np.all(np.abs(multiples - np.rint(multiples)) <= MAX_SLICE_GAP_SPREAD):
        first = int(np.argmax(multiples > 1.5))
        missing = int(np.rint(multiples).sum() - len(steps))
        return (
            f"{folder}: slices are missing: the series steps {step:.3g} mm but {steps[first]:.3g} mm "
            f"separate {names[first]} and {names[first + 1]} ({missing} slice(s) missing "
            "in all); copy the whole series"
        )
    return (
        f"{folder}: several series are mixed: slice gaps of {step:.3g} to {steps.max():.3g} mm are not "
        "multiples of one step, as when two series interleave; put each series in its own folder"
    )


def _tag_numbers(reader: sitk.ImageFileReader, tag: str, count: int) -> np.ndarray:
    if not reader.HasMetaDataKey(tag):
        raise KeyError(tag)
    text = reader.GetMetaData(tag).replace(",", "\\")
    try:
        values = [float(v) for v in text.split("\\") if v.strip()]
    except ValueError:
        raise KeyError(tag) from None
    if len(values) != count:
        raise KeyError(tag)
    return np.array(values, dtype=np.float64)


__all__ = [
    "SKIP_NAMES",
    "DicomSeries",
    "DicomSlice",
    "dicom_files",
    "read_series_image",
    "read_series_layout",
    "read_slice_header",
    "with_series_geometry",
]
