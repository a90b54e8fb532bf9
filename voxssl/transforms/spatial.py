"""Spatial transforms that are *exact* on the voxel grid, for equivariance losses (Pix2Rep in 3D).

Exact means: every output voxel is a copy of exactly one input voxel, ``out[u] = in[source(u)]``
with an integer map ``source``, so the same transform can be applied identically to an image, to a
feature map at any pyramid level, and to voxel coordinates, without interpolation error. Three
kinds qualify:

* flips along any spatial axis: ``u_a -> n_a - 1 - u_a``;
* rotations by multiples of 90 degrees in the axial (x, y) plane (``torch.rot90`` /
  ``numpy.rot90`` semantics: one quarter turn maps input ``(i, j)`` to output ``(n_j - 1 - j, i)``);
  odd turns swap the X and Y sizes, so by default they are only drawn for square planes;
* zoom-in by an integer factor ``k`` with nearest-neighbour replication, then a crop of the
  original size at offset ``o`` (Pix2Rep's zoom-crop): ``source(u) = (u + o) // k``.

What is *not* exact, and therefore not offered: non-integer zoom (nearest resampling replicates
voxels unevenly, so neighbouring voxels are stretched differently), zoom-out (drops voxels and
aliases), and any interpolating resampling or non-right-angle rotation (new values are created).

On pyramid level ``i`` (grid ``ceil(S / 2**i)``, voxel ``v`` at cell ``v // 2**i``) the same
transform is exact when the crop offsets are multiples of ``2**i`` and, for flips and rotations,
the flipped/rotated sizes are multiples of ``2**i``; :meth:`GridTransform.apply_features` checks
this. Mapping *coordinates* (:meth:`GridTransform.source_points`) is exact at every level, because
the embeddings are then gathered from the untransformed pyramid.

Composition order: zoom-crop, then flips, then the rotation. Images may be torch tensors or
numpy arrays with any leading dimensions (``(B, C, X, Y, Z)``, ``(C, X, Y, Z)``...); the last
``len(spatial_shape)`` axes are spatial.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch

Generator = np.random.Generator | torch.Generator
Array = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class GridTransform:
    """A deterministic exact grid transform of inputs with spatial shape ``spatial_shape``.

    Args:
        spatial_shape: the full-resolution input grid, e.g. ``(128, 128, 32)``.
        zoom: integer zoom-in factor (1: none).
        zoom_offset: per-axis crop offset into the zoomed grid, ``0 <= o_a <= (zoom - 1) * n_a``.
        flip_axes: spatial axes to flip (0 = x).
        quarter_turns: number of 90-degree rotations in the plane ``rotation_axes``.
        rotation_axes: the rotation plane (default the axial (x, y) plane).
    """

    spatial_shape: tuple[int, ...]
    zoom: int = 1
    zoom_offset: tuple[int, ...] | None = None
    flip_axes: tuple[int, ...] = ()
    quarter_turns: int = 0
    rotation_axes: tuple[int, int] = (0, 1)

    def __post_init__(self) -> None:
        dims = len(self.spatial_shape)
        object.__setattr__(self, "spatial_shape", tuple(int(n) for n in self.spatial_shape))
        offset = (
            tuple(int(o) for o in self.zoom_offset) if self.zoom_offset is not None else (0,) * dims
        )
        object.__setattr__(self, "zoom_offset", offset)
        object.__setattr__(self, "flip_axes", tuple(sorted({int(a) for a in self.flip_axes})))
        object.__setattr__(self, "quarter_turns", int(self.quarter_turns) % 4)
        if self.zoom < 1 or int(self.zoom) != self.zoom:
            raise ValueError(
                f"zoom must be a positive integer (exact on the grid), got {self.zoom}"
            )
        if len(offset) != dims:
            raise ValueError(f"zoom_offset needs {dims} values, got {offset}")
        for o, n in zip(offset, self.spatial_shape, strict=True):
            if not 0 <= o <= (self.zoom - 1) * n:
                raise ValueError(
                    f"zoom_offset {offset} leaves the zoomed grid of {self.spatial_shape} x{self.zoom}"
                )
        if any(not 0 <= a < dims for a in self.flip_axes + tuple(self.rotation_axes)):
            raise ValueError(
                f"axes must be in [0, {dims}); got flips {self.flip_axes}, rotation {self.rotation_axes}"
            )
        if len(self.rotation_axes) != 2 or self.rotation_axes[0] == self.rotation_axes[1]:
            raise ValueError(f"rotation_axes must be two different axes, got {self.rotation_axes}")

    @property
    def offsets(self) -> tuple[int, ...]:
        """``zoom_offset`` as ``__post_init__`` resolved it (zeros where none was given)."""
        return self.zoom_offset if self.zoom_offset is not None else (0,) * len(self.spatial_shape)

    # ----------------------------------------------------------------------------- shapes
    def output_shape(self, shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """Spatial shape after the transform (sizes of the rotation plane swap for odd turns)."""
        shape = list(self.spatial_shape if shape is None else shape)
        if self.quarter_turns % 2:
            a, b = self.rotation_axes
            shape[a], shape[b] = shape[b], shape[a]
        return tuple(shape)

    # ----------------------------------------------------------------------------- arrays
    def apply_image(self, image: Array) -> Array:
        """Transform an image ``(..., *spatial_shape)`` (torch or numpy)."""
        self._check_spatial(image.shape, self.spatial_shape, "image")
        return self._apply(image, level=0)

    def apply_features(self, features: Array, level: int) -> Array:
        """Transform a pyramid level ``(..., *ceil(spatial_shape / 2**level))`` on its own grid.

        Raises ValueError when the transform is not exact on that level's grid (offsets or
        flipped/rotated sizes not multiples of ``2**level``).
        """
        scale = 2**level
        level_shape = tuple(-(-n // scale) for n in self.spatial_shape)
        self._check_spatial(features.shape, level_shape, f"level-{level} features")
        if any(o % scale for o in self.offsets):
            raise ValueError(
                f"zoom offset {self.zoom_offset} is not a multiple of 2**{level}: not exact at level {level}"
            )
        moved = set(self.flip_axes) | (set(self.rotation_axes) if self.quarter_turns else set())
        if any(self.spatial_shape[a] % scale for a in moved):
            raise ValueError(
                f"size {self.spatial_shape} is not a multiple of 2**{level} along a flipped/rotated axis: "
                f"not exact at level {level} (map coordinates with source_points instead)"
            )
        return self._apply(features, level=level)

    def apply_pyramid(self, pyramid: Sequence[Array]) -> list[Array]:
        """:meth:`apply_features` on every level (level 0 first)."""
        return [self.apply_features(level_map, i) for i, level_map in enumerate(pyramid)]

    def __call__(self, image: Array) -> Array:
        return self.apply_image(image)

    def _apply(self, x: Array, level: int) -> Array:
        dims = len(self.spatial_shape)
        first = x.ndim - dims
        if self.zoom > 1:
            for axis, offset in enumerate(self.offsets):
                size = x.shape[first + axis]
                index = (np.arange(size) + (offset >> level)) // self.zoom
                x = _take(x, index, first + axis)
        if self.flip_axes:
            flip = [first + a for a in self.flip_axes]
            x = x.flip(flip) if isinstance(x, torch.Tensor) else np.flip(x, tuple(flip))
        if self.quarter_turns:
            plane = (first + self.rotation_axes[0], first + self.rotation_axes[1])
            if isinstance(x, torch.Tensor):
                x = torch.rot90(x, self.quarter_turns, dims=plane)
            else:
                x = np.rot90(x, self.quarter_turns, axes=plane)
        return np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x.contiguous()

    # ----------------------------------------------------------------------------- points
    @overload
    def source_points(self, points: torch.Tensor) -> torch.Tensor: ...
    @overload
    def source_points(self, points: np.ndarray) -> np.ndarray: ...
    def source_points(self, points: Array) -> Array:
        """Input voxels that output voxels ``points`` copy: ``out[p] = in[source_points(p)]``.

        ``points`` is ``(N, dims)`` or ``(N, 1 + dims)`` with a leading batch column (kept).
        Always exact, for any zoom; use it to compare ``f(T(x))`` at ``p`` with ``f(x)`` at
        ``source_points(p)``.
        """
        spatial, restore = self._split_points(points)
        # Undo the rotation one quarter turn at a time, from the last one back.
        shapes = [self.spatial_shape]
        for _ in range(self.quarter_turns):
            shapes.append(_swap(shapes[-1], self.rotation_axes))
        a, b = self.rotation_axes
        for turn in range(self.quarter_turns, 0, -1):
            size_b = shapes[turn - 1][b]
            i, j = spatial[:, a].copy(), spatial[:, b].copy()
            spatial[:, a], spatial[:, b] = j, size_b - 1 - i
        for axis in self.flip_axes:
            spatial[:, axis] = self.spatial_shape[axis] - 1 - spatial[:, axis]
        if self.zoom > 1:
            spatial = (spatial + np.asarray(self.zoom_offset)) // self.zoom
        return restore(spatial)

    def map_points(self, points: Array, shape: Sequence[int] | None = None) -> Array:
        """Where input voxels ``points`` go: ``out[map_points(p)] = in[p]`` (forward map).

        With ``zoom > 1`` an input voxel becomes a ``zoom``-wide block; the block's first voxel is
        returned and it may fall outside the cropped output (check with :meth:`inside`).
        ``shape``, when given, must be ``spatial_shape`` (kept for callers that pass it).
        """
        if shape is not None and tuple(int(n) for n in shape) != self.spatial_shape:
            raise ValueError(
                f"this transform was drawn for shape {self.spatial_shape}, not {tuple(shape)}"
            )
        spatial, restore = self._split_points(points)
        if self.zoom > 1:
            spatial = spatial * self.zoom - np.asarray(self.zoom_offset)
        for axis in self.flip_axes:
            spatial[:, axis] = self.spatial_shape[axis] - 1 - spatial[:, axis]
        a, b = self.rotation_axes
        current = self.spatial_shape
        for _ in range(self.quarter_turns):
            i, j = spatial[:, a].copy(), spatial[:, b].copy()
            spatial[:, a], spatial[:, b] = current[b] - 1 - j, i
            current = _swap(current, self.rotation_axes)
        return restore(spatial)

    def inside(self, points: Array) -> Array:
        """Boolean ``(N,)``: which output-grid points lie inside the output."""
        spatial, _ = self._split_points(points)
        upper = np.asarray(self.output_shape())
        keep = np.all((spatial >= 0) & (spatial < upper), axis=1)
        return (
            torch.from_numpy(keep).to(points.device) if isinstance(points, torch.Tensor) else keep
        )

    def _split_points(self, points: Array):
        dims = len(self.spatial_shape)
        as_tensor = points if isinstance(points, torch.Tensor) else None
        array = np.asarray(points) if as_tensor is None else as_tensor.detach().cpu().numpy()
        if array.ndim != 2 or array.shape[1] not in (dims, dims + 1):
            raise ValueError(
                f"points must be (N, {dims}) or (N, {dims + 1}) with a batch column, got {array.shape}"
            )
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"points must be integer voxel indices, got {array.dtype}")
        batch = array[:, :1] if array.shape[1] == dims + 1 else None
        spatial = array[:, -dims:].astype(np.int64, copy=True)

        def restore(result: np.ndarray) -> Array:
            out = (
                result
                if batch is None
                else np.concatenate([batch.astype(np.int64), result], axis=1)
            )
            if as_tensor is not None:
                return torch.from_numpy(np.ascontiguousarray(out)).to(
                    device=as_tensor.device, dtype=as_tensor.dtype
                )
            return out.astype(array.dtype, copy=False)

        return spatial, restore

    @staticmethod
    def _check_spatial(shape: Sequence[int], expected: Sequence[int], what: str) -> None:
        if tuple(shape[len(shape) - len(expected) :]) != tuple(expected) or len(shape) < len(
            expected
        ):
            raise ValueError(
                f"{what} has spatial shape {tuple(shape)[-len(expected) :]}, the transform expects {tuple(expected)}"
            )


class RandomGridTransform:
    """Draws :class:`GridTransform` s (MONAI style: :meth:`randomize` draws, the result applies).

    Args:
        flip_prob: probability of flipping each axis in ``flip_axes``.
        flip_axes: axes that may be flipped (default x, y, z).
        rotation_turns: the quarter turns to choose from, uniformly (default 0-3).
        rotation_axes: the rotation plane (default axial (x, y)).
        allow_shape_change: draw odd turns on a non-square plane (the output shape then differs
            from the input's); by default only 0 and 2 turns are drawn there.
        zoom_prob: probability of an integer zoom-in (default 0: no zoom).
        zoom_factors: integer factors to choose from, uniformly.
        offset_multiple: crop offsets are drawn as multiples of this; use ``2**(num_levels - 1)``
            so that :meth:`GridTransform.apply_features` is exact on every pyramid level.

    ``sampler(generator, shape)`` is ``sampler.randomize(shape, generator)``, the signature the
    view generator (:mod:`voxssl.transforms.pairs`) calls.
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        flip_axes: Sequence[int] = (0, 1, 2),
        rotation_turns: Sequence[int] = (0, 1, 2, 3),
        rotation_axes: tuple[int, int] = (0, 1),
        allow_shape_change: bool = False,
        zoom_prob: float = 0.0,
        zoom_factors: Sequence[int] = (2,),
        offset_multiple: int = 1,
    ) -> None:
        if not 0.0 <= flip_prob <= 1.0 or not 0.0 <= zoom_prob <= 1.0:
            raise ValueError(
                f"probabilities must be in [0, 1], got flip {flip_prob}, zoom {zoom_prob}"
            )
        if any(int(k) != k or k < 1 for k in zoom_factors) or (zoom_prob > 0 and not zoom_factors):
            raise ValueError(
                f"zoom_factors must be positive integers (exact on the grid), got {tuple(zoom_factors)}"
            )
        if offset_multiple < 1:
            raise ValueError(f"offset_multiple must be >= 1, got {offset_multiple}")
        if not rotation_turns:
            raise ValueError("rotation_turns must not be empty (use (0,) for no rotation)")
        self.flip_prob = flip_prob
        self.flip_axes = tuple(flip_axes)
        self.rotation_turns = tuple(int(t) % 4 for t in rotation_turns)
        first_axis, second_axis = rotation_axes
        self.rotation_axes = (first_axis, second_axis)
        self.allow_shape_change = allow_shape_change
        self.zoom_prob = zoom_prob
        self.zoom_factors = tuple(int(k) for k in zoom_factors)
        self.offset_multiple = offset_multiple
        self.transform: GridTransform | None = None

    def randomize(self, spatial_shape: Sequence[int], generator: Generator) -> GridTransform:
        shape = tuple(int(n) for n in spatial_shape)
        flips = tuple(
            a for a in self.flip_axes if a < len(shape) and _uniform(generator) < self.flip_prob
        )
        turns_allowed = self.rotation_turns
        a, b = self.rotation_axes
        if shape[a] != shape[b] and not self.allow_shape_change:
            turns_allowed = tuple(t for t in turns_allowed if t % 2 == 0) or (0,)
        turns = turns_allowed[_integer(generator, len(turns_allowed))]
        zoom, offset = 1, (0,) * len(shape)
        if self.zoom_prob > 0 and _uniform(generator) < self.zoom_prob:
            zoom = self.zoom_factors[_integer(generator, len(self.zoom_factors))]
            offset = tuple(
                self.offset_multiple
                * _integer(generator, (zoom - 1) * n // self.offset_multiple + 1)
                for n in shape
            )
        self.transform = GridTransform(shape, zoom, offset, flips, turns, self.rotation_axes)
        return self.transform

    def __call__(self, generator: Generator, spatial_shape: Sequence[int]) -> GridTransform:
        return self.randomize(spatial_shape, generator)


class RandomGridTransformd:
    """Dictionary wrapper: one drawn transform applied identically to ``keys`` (image, label...).

    Every grid transform copies voxels without interpolation, so label maps stay valid. The
    drawn :class:`GridTransform` is stored under ``transform_key`` so that coordinates can be
    mapped with it. Arrays are ``(C, *spatial)`` (MONAI layout); the first key sets the shape.
    """

    def __init__(
        self,
        keys: Sequence[str],
        sampler: RandomGridTransform,
        transform_key: str = "grid_transform",
        spatial_dims: int = 3,
    ) -> None:
        if not keys:
            raise ValueError("keys must name at least one entry")
        self.keys = tuple(keys)
        self.spatial_dims = spatial_dims
        self.sampler = sampler
        self.transform_key = transform_key

    def __call__(self, data: dict, generator: Generator) -> dict:
        missing = [k for k in self.keys if k not in data]
        if missing:
            raise KeyError(
                f"RandomGridTransformd: key '{missing[0]}' not in the data (has {', '.join(data)})"
            )
        out = dict(data)
        spatial_shape = tuple(data[self.keys[0]].shape[-self.spatial_dims :])
        transform = self.sampler.randomize(spatial_shape, generator)
        for key in self.keys:
            out[key] = transform.apply_image(data[key])
        out[self.transform_key] = transform
        return out


def _uniform(generator: Generator) -> float:
    if isinstance(generator, torch.Generator):
        return float(torch.rand((), generator=generator))
    return float(generator.random())


def _integer(generator: Generator, high: int) -> int:
    """Uniform integer in ``[0, high)``."""
    if isinstance(generator, torch.Generator):
        return int(torch.randint(high, (), generator=generator))
    return int(generator.integers(high))


def _take(x: Array, index: np.ndarray, axis: int) -> Array:
    if isinstance(x, torch.Tensor):
        return x.index_select(axis, torch.from_numpy(index).to(x.device))
    return np.take(x, index, axis=axis)


def _swap(shape: tuple[int, ...], axes: Sequence[int]) -> tuple[int, ...]:
    out = list(shape)
    out[axes[0]], out[axes[1]] = out[axes[1]], out[axes[0]]
    return tuple(out)


__all__ = ["GridTransform", "RandomGridTransform", "RandomGridTransformd"]
