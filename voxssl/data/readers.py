"""Read scans (NIfTI files, DICOM series folders) and labels into RAS :class:`Volume` objects.

Every problem a user can fix (a truncated file, a 2D image, NaNs, a label on another grid, an
unreadable DICOM) raises :class:`~voxssl.errors.DataError` naming the file and the reason.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from voxssl.data.case import Case
from voxssl.data.chaos_png import read_case_label as read_chaos_case_label
from voxssl.data.dicom import read_series_image, read_series_layout
from voxssl.data.volume import Volume
from voxssl.errors import ConfigError, DataError
from voxssl.vocabulary import IGNORE_INDEX, ORGANS

NIFTI_SUFFIXES = (".nii", ".nii.gz")
#: Environment variable: the most voxels (all channels) an image may declare before it is read.
MAX_VOXELS_ENV = "VOXSSL_MAX_VOXELS"
#: Default of that limit: 2**30 voxels (a 1024^3 or 512x512x4096 scan; 4 GB as float32, and
#: preprocessing holds a few such arrays at its peak).
DEFAULT_MAX_VOXELS = 2**30
#: deflate cannot compress better than 1032:1, so a gzip file of n bytes never holds more than
#: about 1032 n bytes; a header that declares more lies (or the file is truncated).
_MAX_DEFLATE_RATIO = 1100


def max_voxels_limit(max_voxels: int | None = None) -> int:
    """The voxel limit: ``max_voxels`` if given, else ``$VOXSSL_MAX_VOXELS``, else the default."""
    if max_voxels is not None:
        return int(max_voxels)
    text = os.environ.get(MAX_VOXELS_ENV, "").strip().replace("_", "")
    if not text:
        return DEFAULT_MAX_VOXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(
            f"{MAX_VOXELS_ENV}={os.environ[MAX_VOXELS_ENV]!r} must be a positive number of voxels"
        )
    return value


def read_volume(
    path: str | os.PathLike, allow_channels: bool = False, max_voxels: int | None = None
) -> Volume:
    """Read a NIfTI file or a DICOM series folder, reoriented to RAS.

    Args:
        path: ``.nii`` / ``.nii.gz`` file or a folder of DICOM slices (one series).
        allow_channels: accept a 4D NIfTI as a multi-channel scan (channels last on disk,
            returned first: (C, X, Y, Z)). Without it a 4D image is an error.
        max_voxels: refuse (before reading any voxel) an image that declares more voxels
            (default: ``$VOXSSL_MAX_VOXELS`` or :data:`DEFAULT_MAX_VOXELS`).
    """
    path = Path(path)
    limit = max_voxels_limit(max_voxels)
    if path.is_dir():
        data, affine = _read_dicom_series(path, limit)
    elif path.is_file():
        data, affine = _read_nifti(path, allow_channels, limit)
    else:
        raise DataError(f"{path}: no such file or folder")
    _check_finite(data, path)
    return to_ras(data, affine, path)


def to_ras(data: np.ndarray, affine: np.ndarray, path: Path) -> Volume:
    """Reorient a stored array (spatial axes first, optional channels last) to RAS."""
    affine = np.asarray(affine, dtype=np.float64)
    x, y, z = data.shape[:3]
    original_shape = (int(x), int(y), int(z))
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(data, ornt)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, original_shape)
    if ras.ndim == 4:
        ras = np.moveaxis(ras, -1, 0)
    return Volume(
        data=_working_array(ras),
        affine=ras_affine,
        original_affine=affine,
        original_shape=original_shape,
        orientation=ornt,
        path=path,
    )


def _working_array(ras: np.ndarray) -> np.ndarray:
    """Small integer images stay as they are (a flipped/permuted view, no copy: half the memory
    of float32 and none spent on reordering); anything else becomes contiguous float32."""
    if ras.dtype.kind in "iu" and ras.dtype.itemsize <= 2:
        return ras
    return np.ascontiguousarray(ras, dtype=np.float32)


def read_case_image(case: Case, max_voxels: int | None = None) -> Volume:
    """The image of a case; multi-channel cases stacked to (C, X, Y, Z).

    A case is multi-channel when it lists ``channels`` (one 3D file each), or when its image is a
    4D NIfTI and the adapter said so through ``metadata["channel_names"]`` (MSD multi-modal
    tasks); any other 4D image is an error.
    """
    if not case.channels:
        channel_names = case.metadata.get("channel_names") or []
        volume = read_volume(
            case.image, allow_channels=len(channel_names) > 1, max_voxels=max_voxels
        )
        if len(channel_names) > 1 and volume.num_channels != len(channel_names):
            raise DataError(
                f"{case.image}: {volume.num_channels} channel(s) in the image, the data set lists "
                f"{len(channel_names)} ({', '.join(channel_names)})"
            )
        return volume
    volumes = [read_volume(p, max_voxels=max_voxels) for p in case.channels]
    first = volumes[0]
    for vol in volumes[1:]:
        _check_same_grid(first, vol.path, vol.spatial_shape, vol.affine, "channel")
    stacked = np.stack([v.data for v in volumes])
    return Volume(
        stacked,
        first.affine,
        first.original_affine,
        first.original_shape,
        first.orientation,
        first.path,
    )


def read_case_label(
    case: Case, image: Volume, tolerance_voxels: float = 0.05, require_organs: bool = False
) -> np.ndarray | None:
    """The label of a case on ``image``'s RAS grid, mapped to canonical ids (uint8).

    NIfTI labels must lie on the image grid (same shape, affines equal within ``tolerance_voxels``
    of a voxel, compared after both are reoriented to RAS, so a label stored in another
    orientation than its image is accepted). CHAOS PNG folders are decoded by
    :func:`voxssl.data.chaos_png.read_chaos_label`. With ``require_organs`` (what preprocess
    asks), ids outside the organ vocabulary and labels that mark no organ are errors
    (:func:`check_label_ids`).
    """
    if case.label is None:
        return None
    if case.label_format == "chaos_png":
        raw = _read_chaos_png_label(case, image)
    else:
        label = read_volume(case.label)
        if label.num_channels != 1:
            raise DataError(f"{case.label}: a label must be a 3D image, got {label.data.shape}")
        _check_same_grid(
            image, label.path, label.spatial_shape, label.affine, "label", tolerance_voxels
        )
        raw = label.data
    path = Path(case.label) if case.label is not None else Path("?")
    mapped = map_label_ids(raw, case.label_map, path)
    if require_organs:
        check_label_ids(mapped, path, raw if case.label_map is not None else None)
    return mapped


def check_label_ids(label: np.ndarray, path: Path, raw: np.ndarray | None = None) -> None:
    """A canonical-id label must use ids of :data:`voxssl.vocabulary.ORGANS` (plus 0 and the
    ignore value 255) and mark at least one organ voxel.

    ``raw``: the label before an adapter's ``label_map`` was applied, named in the message when
    the map leaves nothing (its ids are then not the ones the map expects).
    """

    present = np.flatnonzero(np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256))
    unknown = [int(v) for v in present if v not in ORGANS and v not in (0, IGNORE_INDEX)]
    if unknown:
        shown = ", ".join(str(v) for v in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise DataError(
            f"{path}: label ids [{shown}] are not in the organ vocabulary (1-{max(ORGANS)}, see "
            "docs/datasets.md); map them with the adapter's label_map option or fix the label"
        )
    if not any(v in ORGANS for v in present):
        if raw is not None and np.any(np.asarray(raw) > 0):
            raw_ids = np.unique(np.asarray(raw))
            ids = ", ".join(str(int(v)) for v in raw_ids[raw_ids > 0][:10])
            reason = f"its ids [{ids}] are all outside the adapter's label_map"
        else:
            reason = "every voxel is background or not annotated"
        raise DataError(
            f"{path}: the label marks no organ ({reason}); fix the label or remove it (the case "
            "is not cached)"
        )


def map_label_ids(raw: np.ndarray, label_map: dict[int, int] | None, path: Path) -> np.ndarray:
    """Check label values and map them to canonical uint8 ids (ids absent from the map -> 0).

    Works in the stored integer type (no int64 copy of a 40 M-voxel label); float labels must
    hold integers.
    """
    values = np.asarray(raw)
    if values.dtype.kind == "f":
        rounded = np.rint(values)
        if not np.allclose(rounded, values, atol=1e-3):
            raise DataError(
                f"{path}: label values are not integers (is this an image, not a label?)"
            )
        values = rounded
    elif values.dtype.kind not in "iub":
        raise DataError(f"{path}: label values must be integers, got {values.dtype}")
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise DataError(f"{path}: label values must be in [0, 65535], got [{low}, {high}]")
    if values.dtype.kind == "f" or values.dtype.itemsize > 2:
        values = values.astype(np.uint16)
    if label_map is None:
        if high > 255:
            raise DataError(
                f"{path}: label id {high} does not fit the uint8 cache; give the adapter a label_map"
            )
        return values.astype(np.uint8, copy=False)
    lut = np.zeros(max(int(high), max(label_map, default=0)) + 1, dtype=np.uint8)
    for source_id, canonical_id in label_map.items():
        lut[int(source_id)] = int(canonical_id)
    return lut[values]


def _read_chaos_png_label(case: Case, image: Volume) -> np.ndarray:
    """A CHAOS Ground PNG folder on ``image``'s RAS grid (ids are canonical after decoding).

    :func:`voxssl.data.chaos_png.read_case_label` stacks the PNGs by slice position and resamples
    them (nearest neighbour, an identity copy when the grids agree) onto a SimpleITK image with the
    geometry of the series as stored; the result is then reoriented exactly like the image.
    """
    reference = sitk.Image([int(n) for n in image.original_shape], sitk.sitkUInt8)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.original_affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    reference.SetSpacing(spacing.tolist())
    reference.SetOrigin(lps[:3, 3].tolist())
    reference.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    label = read_chaos_case_label(case, reference)
    stored = np.transpose(sitk.GetArrayFromImage(label), (2, 1, 0))
    return nib.orientations.apply_orientation(stored, image.orientation)


# ---------------------------------------------------------------------------------------------
# NIfTI


def _read_nifti(
    path: Path, allow_channels: bool, max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[np.ndarray, np.ndarray]:
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise DataError(f"{path}: not a NIfTI file (.nii / .nii.gz) or a DICOM folder")
    try:
        image = _load_nifti(path)
        check_declared_size(path, image, max_voxels)
        proxy = image.dataobj
        scaled = getattr(proxy, "slope", 1.0) != 1.0 or getattr(proxy, "inter", 0.0) != 0.0
        # scaled integers straight to float32 (np.asarray would give float64: twice the memory)
        data = image.get_fdata(dtype=np.float32) if scaled else np.asarray(proxy)
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataError(_unreadable(path, err)) from None
    except MemoryError:
        raise DataError(
            f"{path}: not enough memory to read the image of shape {tuple(image.shape)}"
        ) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim < 3 or min(data.shape[:3]) <= 1:
        raise DataError(
            f"{path}: expected a 3D image, got shape {data.shape} (2D images are not supported)"
        )
    if data.ndim == 4 and not allow_channels:
        raise DataError(f"{path}: expected a 3D image, got a 4D image of shape {data.shape}")
    if data.ndim > 4:
        raise DataError(f"{path}: expected a 3D image, got shape {data.shape}")
    return data, image.affine


def check_declared_size(path: Path, image, max_voxels: int) -> None:
    """Refuse, from the header alone, an image the file cannot hold or larger than ``max_voxels``.

    Uncompressed: the file must hold ``vox_offset + voxels x itemsize`` bytes. gzip: deflate's
    best ratio bounds what a file of its size can hold. Both before any voxel array exists, so a
    1 KB file that declares 1000^3 voxels costs no memory.
    """
    shape = tuple(int(n) for n in image.shape)
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    itemsize = int(np.dtype(image.get_data_dtype()).itemsize)
    declared = voxels * itemsize
    offset = int(image.header.get("vox_offset", 0) or 0)
    size = path.stat().st_size
    what = f"{path}: the header declares shape {shape} {image.get_data_dtype()} ({_human_bytes(declared)})"
    if path.name.endswith(".gz"):
        if declared > _MAX_DEFLATE_RATIO * size:
            raise DataError(
                f"{what} but a {_human_bytes(size)} gzip file cannot hold more than "
                f"{_human_bytes(_MAX_DEFLATE_RATIO * size)}; the file is truncated or its header is wrong"
            )
    elif size < offset + declared:
        raise DataError(
            f"{what} but the file holds {_human_bytes(size)}; the file is truncated or its header is wrong"
        )
    if voxels > max_voxels:
        raise DataError(
            f"{path}: the header declares shape {shape} ({voxels} voxels), above the limit of "
            f"{max_voxels} voxels; if the image really is that large, raise {MAX_VOXELS_ENV} "
            "(or preprocess.max_voxels in the recipe)"
        )


def _human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1024 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """``nib.load`` of a .nii / .nii.gz file: a NIfTI-1 or NIfTI-2 image (a ``Nifti1Image``)."""
    image = nib.load(path)
    if not isinstance(image, nib.Nifti1Image):
        raise DataError(f"{path}: not a NIfTI image (nibabel reads it as {type(image).__name__})")
    return image


def _unreadable(path: Path, err: BaseException) -> str:
    reason = " ".join(str(err).split())  # one line: nibabel's messages hold newlines
    return f"{path}: cannot read NIfTI ({type(err).__name__}: {reason}); the file is truncated or corrupt"


@dataclass(frozen=True)
class NiftiGeometry:
    """A NIfTI file's qform and sform (affine and code), to write results on its grid with them."""

    qform: np.ndarray
    qform_code: int
    sform: np.ndarray
    sform_code: int


def nifti_geometry(path: str | os.PathLike) -> NiftiGeometry | None:
    """The qform/sform of a NIfTI file (header only); None for a DICOM folder or another file."""
    path = Path(path)
    if not (path.is_file() and path.name.endswith(NIFTI_SUFFIXES)):
        return None
    try:
        header = _load_nifti(path).header
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataError(_unreadable(path, err)) from None
    if not isinstance(header, nib.Nifti1Header):  # a Nifti1Image's (or Nifti2Image's) header
        raise DataError(f"{path}: not a NIfTI header ({type(header).__name__})")
    base = header.get_best_affine()
    qform, qform_code = header.get_qform(coded=True)
    sform, sform_code = header.get_sform(coded=True)
    return NiftiGeometry(
        qform=np.asarray(qform if qform is not None else header.get_qform(), dtype=np.float64),
        qform_code=int(qform_code or 0),
        sform=np.asarray(sform if sform is not None else base, dtype=np.float64),
        sform_code=int(sform_code or 0),
    )


def _check_finite(data: np.ndarray, path: Path) -> None:
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise DataError(f"{path}: the image contains {bad} NaN or infinite voxels")


def _check_same_grid(
    reference: Volume,
    path: Path,
    shape: tuple[int, ...],
    ras_affine: np.ndarray,
    what: str,
    tolerance_voxels: float = 0.05,
) -> None:
    """Shapes equal and RAS affines within ``tolerance_voxels`` of a voxel (in mm)."""
    if reference.spatial_shape != tuple(shape):
        raise DataError(
            f"{what} {path} has grid shape {tuple(shape)} but image {reference.path} has "
            f"{reference.spatial_shape}: the {what} must lie on the image grid"
        )
    tolerance_mm = tolerance_voxels * min(reference.spacing)
    difference = np.abs(reference.affine - ras_affine)[:3]
    if difference.max() > tolerance_mm:
        raise DataError(
            f"{what} {path} is not on the grid of image {reference.path}: their affines differ by "
            f"{difference.max():.4g} mm (tolerance {tolerance_mm:.3g} mm)\n"
            f"image affine:\n{np.round(reference.affine, 4)}\n{what} affine:\n{np.round(ras_affine, 4)}"
        )


def check_label_header(case: Case, image: Volume, tolerance_voxels: float = 0.05) -> None:
    """Check a NIfTI label's grid against the image from its header alone (no voxels read)."""
    if case.label is None:
        raise ValueError(f"case {case.case_id}: no label to check")
    path = Path(case.label)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    try:
        header_image = _load_nifti(path)
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataError(_unreadable(path, err)) from None
    shape = tuple(int(n) for n in header_image.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise DataError(f"{path}: a label must be a 3D image, got shape {shape}")
    affine = np.asarray(header_image.affine, dtype=np.float64)
    ornt = nib.orientations.io_orientation(affine)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    ras_shape = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        ras_shape[int(target)] = shape[axis]
    _check_same_grid(image, path, tuple(ras_shape), ras_affine, "label", tolerance_voxels)


# ---------------------------------------------------------------------------------------------
# DICOM


def _read_dicom_series(
    folder: Path, max_voxels: int = DEFAULT_MAX_VOXELS
) -> tuple[np.ndarray, np.ndarray]:
    """Read the folder as one series (:mod:`voxssl.data.dicom`'s rules) in (column, row, slice)
    order, with its RAS affine from the DICOM tags."""
    series = read_series_layout(folder)
    if len(series.slices) == 1:
        raise DataError(
            f"{folder}: one DICOM file ({series.slices[0].path.name}); single-file or multi-frame "
            "series are not supported, convert it to NIfTI first (e.g. dcm2niix)"
        )
    shape = series.shape
    if int(np.prod(shape, dtype=np.float64)) > max_voxels:
        raise DataError(
            f"{folder}: the series declares shape {shape} ({int(np.prod(shape, dtype=np.float64))} "
            f"voxels), above the limit of {max_voxels} voxels; if it really is that large, raise "
            f"{MAX_VOXELS_ENV} (or preprocess.max_voxels in the recipe)"
        )
    image = read_series_image(series)
    data = np.transpose(
        sitk.GetArrayFromImage(image), (2, 1, 0)
    )  # (slice, row, col) -> (col, row, slice)
    if data.ndim != 3:
        raise DataError(
            f"{folder}: expected single-frame greyscale slices, got pixel array {data.shape}"
        )
    return data, np.diag([-1.0, -1.0, 1.0, 1.0]) @ series.lps_affine()


def read_dicom_image(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float] | None]:
    """One single-frame 2D DICOM file (an X-ray, an ultrasound frame, one MR slice) as pixels.

    Returns ``(pixels, window)``: float32 (rows, columns) with the modality rescale (slope,
    intercept) applied, MONOCHROME1 inverted so that bright means dense, colour pixels (ultrasound)
    turned grey with the ITU-R 601 luma weights; ``window`` is the first (center, width) of the
    file's VOI window, or None.
    """
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(
            f"{path}: not a readable DICOM file ({str(err).strip().splitlines()[-1]})"
        ) from None
    pixels = sitk.GetArrayFromImage(image).astype(np.float32)  # (frames, rows, cols[, comps])
    if pixels.ndim == 4 and pixels.shape[-1] in (3, 4):
        pixels = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if pixels.ndim != 3 or pixels.shape[0] != 1:
        raise DataError(
            f"{path}: expected one 2D greyscale or colour frame, got pixel array {pixels.shape} "
            "(multi-frame files are not supported; export the frames as separate files)"
        )
    pixels = pixels[0]
    tag = lambda key: reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""  # noqa: E731
    if tag("0028|0004").upper() == "MONOCHROME1":
        pixels = pixels.max() + pixels.min() - pixels
    window = None
    try:
        center, width = (float(tag(k).split("\\")[0]) for k in ("0028|1050", "0028|1051"))
        if width > 0:
            window = (center, width)
    except ValueError:
        window = None
    _check_finite(pixels, path)
    return np.ascontiguousarray(pixels), window


__all__ = [
    "DEFAULT_MAX_VOXELS",
    "MAX_VOXELS_ENV",
    "NiftiGeometry",
    "Volume",
    "check_declared_size",
    "check_label_header",
    "check_label_ids",
    "map_label_ids",
    "max_voxels_limit",
    "nifti_geometry",
    "read_case_image",
    "read_case_label",
    "read_dicom_image",
    "read_volume",
    "to_ras",
]
