"""The two grids a phantom is built on, and the cheap resampling between them.

Shapes are implicit functions (approximate signed distances in mm, negative inside). They are
evaluated on a *coarse* grid (about 3 mm, an integer subsample of the output grid) where every
random field, deformation and gradient is cheap, and then linearly upsampled, box by box, to the
*fine* output grid where only the painting happens. Linear interpolation of a smooth distance field
keeps organ boundaries smooth and sub-voxel accurate, which is what makes partial-volume edges
possible without ever working on a high-resolution grid.

Coordinates are millimetres in a body frame (x to the patient's left, y
anterior, z superior) whose origin is the centre of the field of view.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from scipy import ndimage

#: Target spacing of the coarse evaluation grid (mm). Finer costs time, coarser blurs small organs.
COARSE_SPACING_MM = 3.0

Box = tuple[slice, slice, slice]
T = TypeVar("T")


def three(values: Iterable[T]) -> tuple[T, T, T]:
    """``values`` as a 3-tuple (x, y, z); anything else is a programming error."""
    x, y, z = values
    return x, y, z


def interp_axis(array: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``array`` along one axis at fractional indices ``positions``."""
    n = array.shape[axis]
    lower = np.clip(np.floor(positions).astype(np.intp), 0, n - 1)
    upper = np.minimum(lower + 1, n - 1)
    weight = np.clip(positions - lower, 0.0, 1.0).astype(np.float32)
    if np.all(weight == 0):
        return np.take(array, lower, axis=axis)
    shape = [1] * array.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    below = np.take(array, lower, axis=axis)
    above = np.take(array, upper, axis=axis)
    above -= below
    above *= weight
    below += above
    return below


def interp_separable(array: np.ndarray, positions: tuple[np.ndarray, ...]) -> np.ndarray:
    """Separable (tri)linear interpolation onto the rectilinear grid ``positions`` (index units).

    Axes are processed from the smallest to the largest expansion so that the intermediate arrays
    stay small; this is several times faster than ``scipy.ndimage.zoom`` for the same result.
    """
    order = sorted(range(array.ndim), key=lambda a: len(positions[a]) / max(array.shape[a], 1))
    out = array.astype(np.float32, copy=False)
    for axis in order:
        out = interp_axis(out, axis, positions[axis])
    return out


def upsample_axis(array: np.ndarray, axis: int, factor: int, first: int, count: int) -> np.ndarray:
    """Linear upsampling by an integer ``factor`` along one axis, by strided slices (no gathers).

    Output element ``j`` is the value at fine index ``first + j``, where fine index ``i`` sits at
    coarse position ``i / factor`` (coarse index 0 = fine index 0).
    """
    if factor == 1:
        if (first, count) == (0, array.shape[axis]):
            return array
        return np.take(array, np.arange(first, first + count), axis=axis)
    shape = list(array.shape)
    shape[axis] = count
    out = np.empty(shape, dtype=np.float32)

    def along(sl: slice, arr: np.ndarray) -> np.ndarray:
        index = [slice(None)] * arr.ndim
        index[axis] = sl
        return arr[tuple(index)]

    for phase in range(factor):
        start = first + (phase - first) % factor
        if start >= first + count:
            continue
        m = len(range(start, first + count, factor))
        k = start // factor
        target = along(slice(start - first, count, factor), out)
        weight = phase / factor
        low = along(slice(k, k + m), array)
        if weight == 0:
            target[...] = low
            continue
        high = along(slice(k + 1, k + 1 + m), array)
        np.multiply(low, np.float32(1.0 - weight), out=target)
        target += np.float32(weight) * high
    return out


def smooth_noise(
    rng: np.random.Generator, axes_mm: tuple[np.ndarray, ...], corr_mm: float
) -> np.ndarray:
    """A zero-mean, unit-variance random field with correlation length ``corr_mm``.

    White noise on a lattice of spacing ``corr_mm``, lightly smoothed there, then interpolated onto
    the rectilinear grid ``axes_mm`` (one coordinate vector per axis). Cost is dominated by the
    output size, independent of the correlation length.
    """
    lattice_shape = tuple(int(np.ceil((ax.max() - ax.min()) / corr_mm)) + 3 for ax in axes_mm)
    lattice = rng.standard_normal(lattice_shape, dtype=np.float32)
    lattice = ndimage.gaussian_filter(lattice, sigma=0.6, mode="wrap")
    lattice -= lattice.mean()
    lattice /= lattice.std() + 1e-8
    positions = tuple((ax - ax.min()) / corr_mm + 1.0 for ax in axes_mm)
    return interp_separable(lattice, positions)


@dataclass
class PhantomGrid:
    """Fine output grid plus the coarse grid (with its smoothly deformed coordinates) shapes live on."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    factors: tuple[int, int, int] = field(init=False)
    coarse_axes: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False)
    deformed: tuple[np.ndarray, np.ndarray, np.ndarray] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.factors = three(max(1, round(COARSE_SPACING_MM / float(s))) for s in self.spacing)
        axes = []
        for n, s, f in zip(self.shape, self.spacing, self.factors, strict=True):
            n_coarse = int(np.ceil((n - 1) / f)) + 1
            axes.append(((np.arange(n_coarse) * f) - (n - 1) / 2.0).astype(np.float32) * s)
        self.coarse_axes = three(axes)

    @property
    def coarse_shape(self) -> tuple[int, int, int]:
        return three(len(a) for a in self.coarse_axes)

    @property
    def coarse_spacing(self) -> tuple[float, float, float]:
        return three(s * f for s, f in zip(self.spacing, self.factors, strict=True))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return three(n * s for n, s in zip(self.shape, self.spacing, strict=True))

    def fine_axis_mm(self, axis: int) -> np.ndarray:
        n, s = self.shape[axis], self.spacing[axis]
        return ((np.arange(n) - (n - 1) / 2.0) * s).astype(np.float32)

    def deform(self, displacement: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """Set the smooth global deformation: shapes are evaluated at ``x + displacement(x)``."""
        x, y, z = np.meshgrid(*self.coarse_axes, indexing="ij")
        self.deformed = (x + displacement[0], y + displacement[1], z + displacement[2])

    def box(self, low_mm, high_mm) -> Box | None:
        """Coarse-grid box covering the (undeformed) world box ``[low_mm, high_mm]``; None if empty."""
        slices = []
        for ax, lo, hi in zip(self.coarse_axes, low_mm, high_mm, strict=True):
            start = int(np.searchsorted(ax, lo, side="left"))
            stop = int(np.searchsorted(ax, hi, side="right"))
            start, stop = max(start - 1, 0), min(stop + 1, len(ax))
            if stop - start < 1 or lo > ax[-1] or hi < ax[0]:
                return None
            slices.append(slice(start, stop))
        return three(slices)

    def full_box(self) -> Box:
        return three(slice(0, n) for n in self.coarse_shape)

    def coords(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Deformed body-frame coordinates (mm) of the coarse voxels in ``box``."""
        if self.deformed is None:
            raise RuntimeError("PhantomGrid.deform() must be called before evaluating shapes")
        return three(c[box] for c in self.deformed)

    def axes(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Undeformed coordinate vectors of ``box`` (for random fields)."""
        return three(ax[sl] for ax, sl in zip(self.coarse_axes, box, strict=True))

    def fine_box(self, box: Box) -> Box:
        """Fine-grid slices covered by a coarse box."""
        return three(
            slice(sl.start * f, min((sl.stop - 1) * f, n - 1) + 1)
            for sl, f, n in zip(box, self.factors, self.shape, strict=True)
        )

    def fine_noise(self, rng: np.random.Generator, corr_mm: float) -> np.ndarray:
        """Unit-variance random field on the fine grid, correlated over about ``corr_mm``.

        White noise on a lattice that subsamples the fine grid by integer factors, smoothed there
        and linearly upsampled (the fast path: strided slices, no interpolation weights per voxel).
        """
        factors = [max(1, round(corr_mm / float(s))) for s in self.spacing]
        lattice_shape = [
            int(np.ceil((n - 1) / f)) + 2 for n, f in zip(self.shape, factors, strict=True)
        ]
        lattice = rng.standard_normal(lattice_shape, dtype=np.float32)
        lattice = ndimage.gaussian_filter(lattice, sigma=0.6, mode="wrap")
        lattice /= lattice.std() + 1e-8
        out = lattice
        for axis in np.argsort(factors, kind="stable"):
            out = upsample_axis(out, int(axis), factors[axis], 0, self.shape[axis])
        return out

    def upsample(self, coarse: np.ndarray, box: Box) -> np.ndarray:
        """Linearly interpolate a coarse field over ``box`` onto the fine voxels it covers."""
        return self.upsample_block(coarse, tuple(sl.start for sl in box), self.fine_box(box))

    def upsample_block(self, coarse: np.ndarray, start: tuple[int, ...], fine: Box) -> np.ndarray:
        """Interpolate ``coarse`` (whose first voxel is coarse index ``start``) at the ``fine`` voxels."""
        out = coarse.astype(np.float32, copy=False)
        for axis in np.argsort(self.factors, kind="stable"):
            f, fs = self.factors[axis], fine[axis]
            out = upsample_axis(out, int(axis), f, fs.start - f * start[axis], fs.stop - fs.start)
        return out

    def block_size(self, fine_voxels: int = 1 << 17) -> int:
        """Coarse block edge whose fine blocks hold about ``fine_voxels`` voxels."""
        return max(4, int(np.ceil((fine_voxels / np.prod(self.factors)) ** (1.0 / 3.0))))

    def blocks(self, box: Box, size: int):
        """Split ``box`` into blocks of ``size`` coarse voxels for painting.

        Yields ``(data, start, fine)``: the slices of the box's array holding the block's coarse
        samples (one voxel of overlap, what interpolation needs), the block's first coarse index,
        and the fine voxels it paints. Fine ranges of different blocks never overlap.
        """
        fine_box = self.fine_box(box)
        ranges = []
        for sl, f, fs in zip(box, self.factors, fine_box, strict=True):
            axis = []
            for c0 in range(sl.start, sl.stop, size):
                c1 = min(c0 + size, sl.stop)
                data = slice(c0 - sl.start, min(c1 + 1, sl.stop) - sl.start)
                axis.append((data, c0, slice(c0 * f, min(c1 * f, fs.stop))))
            ranges.append(axis)
        for bx in ranges[0]:
            for by in ranges[1]:
                for bz in ranges[2]:
                    blocks = (bx, by, bz)
                    if any(b[2].stop <= b[2].start for b in blocks):
                        continue
                    yield (
                        tuple(b[0] for b in blocks),
                        tuple(b[1] for b in blocks),
                        tuple(b[2] for b in blocks),
                    )

    def in_voxel_widths(self, distance: np.ndarray) -> np.ndarray:
        """Signed distance (mm) divided by the width of a fine voxel across the surface.

        A voxel of spacing (sx, sy, sz) spans ``sum_i |n_i| s_i`` along the surface normal ``n``,
        so with anisotropic voxels a boundary parallel to the slices is blurred over a whole slice
        thickness and one across them over an in-plane voxel, as in real thick-slice scans.
        Computed on the coarse grid, where it is cheap; the sign (inside/outside) is unchanged.
        """
        width = np.zeros(distance.shape, dtype=np.float32)
        norm = np.zeros(distance.shape, dtype=np.float32)
        for axis, (step, size) in enumerate(zip(self.coarse_spacing, self.spacing, strict=True)):
            if distance.shape[axis] > 1:
                component = np.gradient(distance, step, axis=axis)
                width += np.abs(component) * np.float32(size)
                norm += component * component
        width /= np.maximum(np.sqrt(norm), 1e-3)
        np.clip(width, min(self.spacing), sum(self.spacing), out=width)
        return distance / width

    def gradient_norm(self, values: np.ndarray) -> np.ndarray:
        """|grad values| (per mm) on the coarse grid; axes of length 1 contribute nothing."""
        total = np.zeros(values.shape, dtype=np.float32)
        for axis, step in enumerate(self.coarse_spacing):
            if values.shape[axis] > 1:
                total += np.gradient(values, step, axis=axis) ** 2
        return np.sqrt(total)
