"""The resampling grid of the cache, and the way back to a scan's original grid.

Three steps take a stored array to the cache: reorientation to RAS (axis permutation and flips,
exact), resampling to the target spacing, and cropping. The resampled grid is chosen so that
nearest-neighbour label resampling can be undone exactly:

* Per RAS axis with source spacing ``s`` and target spacing ``t``, ``ratio = t / s``; resampled
  voxel ``j`` sits at source index ``x = j * ratio``: voxel 0 of both grids shares its centre, and
  the spacing is exactly ``t`` (the last voxel may reach up to half a voxel past the source).
* Forward (labels): resampled ``j`` takes source voxel ``round(j * ratio)``.
  Back: source voxel ``i`` takes resampled voxel ``round(i / ratio)``.
* When ``t <= s`` (ratio <= 1), back(forward(label)) == label for every voxel inside the crop:
  ``j = round(i / ratio)`` lies within ``ratio / 2 < 1/2`` source voxels of ``i`` (exactly on it
  when ratio == 1), so it was filled from voxel ``i`` itself.
* When ``t > s`` (downsampling) information is lost; what still holds exactly is that a source
  voxel ``i`` gets back the label of source voxel ``round(round(i / ratio) * ratio)``, its
  nearest neighbour on the coarse grid (voxel ``i`` itself when ``i`` is a multiple of an
  integer ratio). ``tests/data/test_preprocess.py`` checks both statements.

The crop box is half-open ``[lo, hi)`` per axis in resampled-grid voxels.
"""

from __future__ import annotations

from typing import Any, Literal

import nibabel as nib
import numpy as np

from voxssl.utils.triple import int_triple

#: Tolerance (in source voxels) that absorbs float error when rounding grid positions.
_EPS = 1e-6


def resampled_shape(source_shape: tuple[int, ...], ratio: np.ndarray) -> tuple[int, int, int]:
    """Voxels of the full resampled grid: the last one lies within half a target voxel of the last source voxel."""
    return int_triple(
        int(np.floor((n - 1) / r + 0.5 + _EPS)) + 1
        for n, r in zip(source_shape, ratio, strict=True)
    )


def crop_box_for_source_box(
    source_lo: np.ndarray,
    source_hi: np.ndarray,
    ratio: np.ndarray,
    full_shape: tuple[int, int, int],
) -> np.ndarray:
    """Resampled-grid box [lo, hi) covering the source voxels ``source_lo..source_hi`` (inclusive)."""
    lo = np.floor(np.asarray(source_lo) / ratio + _EPS).astype(int)
    hi = np.ceil(np.asarray(source_hi) / ratio - _EPS).astype(int) + 1
    lo = np.clip(lo, 0, np.array(full_shape) - 1)
    hi = np.clip(hi, lo + 1, np.array(full_shape))
    return np.stack([lo, hi], axis=1)


def source_positions(box: np.ndarray, ratio: np.ndarray) -> list[np.ndarray]:
    """Per axis, the source index (float) of every cached voxel."""
    return [np.arange(lo, hi, dtype=np.float64) * r for (lo, hi), r in zip(box, ratio, strict=True)]


def cached_affine(ras_affine: np.ndarray, box: np.ndarray, ratio: np.ndarray) -> np.ndarray:
    """voxel -> world (RAS mm) of the cached array: cached ``k`` is source index ``(k + lo) * ratio``."""
    to_source = np.diag([*ratio, 1.0])
    to_source[:3, 3] = box[:, 0] * ratio
    return np.asarray(ras_affine, dtype=np.float64) @ to_source


def nearest_source_indices(positions: np.ndarray, size: int) -> np.ndarray:
    return np.clip(np.floor(positions + 0.5 + _EPS), 0, size - 1).astype(np.intp)


def resample_nearest(array: np.ndarray, positions: list[np.ndarray]) -> np.ndarray:
    """Sample ``array`` (3D, or (C, X, Y, Z)) at the nearest voxels of the per-axis positions.

    One ``take`` per axis, shrinking axes first (cheaper than one fancy index over all three).
    """
    offset = array.ndim - 3
    index = [nearest_source_indices(p, array.shape[offset + a]) for a, p in enumerate(positions)]
    result = array
    for axis in sorted(range(3), key=lambda a: len(index[a]) / array.shape[offset + a]):
        result = np.take(result, index[axis], axis=offset + axis)
    return result


def resample_linear(
    array: np.ndarray, positions: list[np.ndarray], out_dtype=np.float32
) -> np.ndarray:
    """Separable (tri)linear interpolation at per-axis positions; positions are clamped to the array.

    One axis at a time, shrinking axes first so that the intermediates stay small; exact copies
    along axes whose positions are integers (ratio 1).
    """
    offset = array.ndim - 3
    sizes = [array.shape[offset + a] for a in range(3)]
    order = sorted(range(3), key=lambda a: len(positions[a]) / sizes[a])
    result = array
    for axis in order:
        result = _linear_along_axis(result, positions[axis], offset + axis, out_dtype)
    return result if result.dtype == out_dtype else result.astype(out_dtype)


def _linear_along_axis(
    array: np.ndarray, positions: np.ndarray, axis: int, out_dtype
) -> np.ndarray:
    """Linear interpolation along one axis, written slab by slab into one output array.

    Slabs (along another axis) bound the temporaries to a few MB instead of two full-size arrays.
    """
    size = array.shape[axis]
    x = np.clip(positions, 0, size - 1)
    rounded = np.rint(x)
    if np.all(np.abs(x - rounded) < 1e-4):
        return np.take(array, rounded.astype(np.intp), axis=axis)
    lower = np.clip(np.floor(x).astype(np.intp), 0, max(size - 2, 0))
    upper = np.minimum(lower + 1, size - 1)
    weight_shape = [1] * array.ndim
    weight_shape[axis] = len(x)
    upper_weight = (x - lower).astype(out_dtype).reshape(weight_shape)
    lower_weight = (1 - upper_weight).astype(out_dtype)
    out_shape = list(array.shape)
    out_shape[axis] = len(x)
    out = np.empty(out_shape, dtype=out_dtype)
    slab_axis = next(a for a in range(array.ndim - 1, -1, -1) if a != axis)
    step = max(1, _SLAB_ELEMENTS // max(1, out.size // out_shape[slab_axis]))
    for start in range(0, out_shape[slab_axis], step):
        window = [slice(None)] * array.ndim
        window[slab_axis] = slice(start, start + step)
        source = array[tuple(window)]
        target = out[tuple(window)]
        np.multiply(np.take(source, lower, axis=axis), lower_weight, out=target, casting="unsafe")
        target += np.take(source, upper, axis=axis) * upper_weight
    return out


#: Elements per slab of the separable interpolation (4 M float32 = 16 MB temporaries).
_SLAB_ELEMENTS = 4_000_000


def to_original_geometry(
    array: np.ndarray,
    meta: dict[str, Any],
    order: Literal["nearest", "linear"] = "nearest",
    fill: float = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Map a cached-grid array (a label, a prediction, probabilities) back to the scan's file grid.

    Args:
        array: (X, Y, Z) or (C, X, Y, Z) on the cached grid (``meta["shape"]``).
        meta: a cached case's meta, or the meta returned by ``preprocess_volume``.
        order: ``nearest`` for labels (exact inverse, see the module docstring), ``linear`` for
            probabilities, logits or images.
        fill: value of voxels outside the crop box (more than half a voxel outside for ``linear``).

    Returns:
        The array on the original grid, in the file's own axis order and orientation
        ((X, Y, Z) or (C, X, Y, Z) with the original spatial shape), and the original affine
        (voxel -> RAS mm) to write it with, e.g. ``nib.Nifti1Image(array, affine)``.
    """
    array = np.asarray(array)
    shape = tuple(int(s) for s in meta["shape"])
    if tuple(array.shape[-3:]) != shape or array.ndim not in (3, 4):
        raise ValueError(
            f"array of shape {array.shape} is not on the cached grid {shape} of this meta"
        )
    ratio = np.asarray(meta["ratio"], dtype=np.float64)
    box = np.asarray(meta["crop_box"], dtype=np.int64)
    ras_shape = _ras_shape(meta)
    # Position of every RAS source voxel on the cached grid.
    positions = [
        np.arange(n, dtype=np.float64) / r - lo
        for n, r, (lo, _) in zip(ras_shape, ratio, box, strict=True)
    ]
    if order == "nearest":
        index = [np.floor(p + 0.5 + _EPS).astype(np.intp) for p in positions]
        inside = [(i >= 0) & (i < n) for i, n in zip(index, shape, strict=True)]
        clipped = [np.clip(i, 0, n - 1) for i, n in zip(index, shape, strict=True)]
        grid: tuple[Any, ...] = (Ellipsis, *np.ix_(*clipped))
        ras = array[grid]
    elif order == "linear":
        inside = [(p >= -0.5) & (p <= n - 0.5) for p, n in zip(positions, shape, strict=True)]
        out_dtype = (
            np.float64 if array.dtype == np.float64 else np.float32
        )  # float16 input: compute in float32
        ras = resample_linear(array, positions, out_dtype=out_dtype)
    else:
        raise ValueError(f"order must be 'nearest' or 'linear', got {order!r}")
    outside = ~(inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :])
    if outside.any():
        ras = np.array(ras, copy=True)
        ras[..., outside] = fill
    return from_ras(ras, meta), np.asarray(meta["original_affine"], dtype=np.float64)


def from_ras(ras: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Undo the reorientation: RAS array (spatial last three axes) -> the file's axis order."""
    ornt = np.asarray(meta["orientation"], dtype=np.float64)
    back = nib.orientations.ornt_transform(
        np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64), ornt
    )
    if ras.ndim == 4:
        moved = nib.orientations.apply_orientation(np.moveaxis(ras, 0, -1), back)
        return np.ascontiguousarray(np.moveaxis(moved, -1, 0))
    return np.ascontiguousarray(nib.orientations.apply_orientation(ras, back))


def _ras_shape(meta: dict[str, Any]) -> tuple[int, int, int]:
    ornt = np.asarray(meta["orientation"], dtype=np.float64)
    original = meta["original_shape"]
    shape = [0, 0, 0]
    for in_axis, (out_axis, _) in enumerate(ornt):
        shape[int(out_axis)] = int(original[in_axis])
    return int_triple(shape)


__all__ = [
    "cached_affine",
    "crop_box_for_source_box",
    "from_ras",
    "resample_linear",
    "resample_nearest",
    "resampled_shape",
    "source_positions",
    "to_original_geometry",
]
