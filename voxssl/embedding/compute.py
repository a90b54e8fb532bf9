"""Whole-volume voxel embeddings of a preprocessed scan, tile by tile, written into one array.

The voxel embedding is the concatenation over pyramid levels of the level's feature at the
voxel's cell (:mod:`voxssl.models.gather`). Over a whole CT it is far larger than the scan
(64 to 1008 channels per voxel), so it is computed at a *stride* ``s`` (a power of two): the
embedding grid has one vector per ``s x s x s`` block of the preprocessed grid, the mean of the
block's voxel embeddings. Level ``i`` is never upsampled to full resolution for that: where
``2^i >= s`` every voxel of a block reads the same level-``i`` cell (blocks are aligned), so the
mean is that cell's feature; where ``2^i < s`` it is an average pooling of the level by
``s / 2^i``. Memory is the strided output plus one window's pyramid, whatever the scan's size.

Tiling. Why not MONAI's ``sliding_window_inference`` as in ``voxssl predict``: it accumulates a
dense float32 output of every channel at full resolution (a 512x512x150 CT with the 160-d
hierarchical embedding would need tens of GB), and blending is not needed for a fully
convolutional network whose windows overlap by a margin. Here windows of ``window`` voxels start
on multiples of the coarsest cell (so pooling cells line up with a whole-volume pass), each keeps
its *core* (the window minus ``margin`` on every side that has a neighbour) and writes it once.
Voxels near a window's inner border therefore always see at least ``margin`` voxels of real
context, like the centre of a sliding window; a volume that fits in one window is computed in
one pass, exactly as :func:`voxssl.eval.feature_cache.compute_pyramid` does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxssl.device import autocast
from voxssl.errors import ConfigError
from voxssl.eval.feature_cache import alignment
from voxssl.transforms.crop import padded_crop

#: Default window (preprocessed voxels, X Y Z) and margin kept as context on inner borders.
DEFAULT_WINDOW = (128, 128, 64)
DEFAULT_MARGIN = 16
STRIDES = (1, 2, 4, 8)


def check_stride(stride: int) -> int:

    if stride not in STRIDES:
        raise ConfigError(f"--stride must be one of {', '.join(map(str, STRIDES))}, got {stride}")
    return int(stride)


def embedding_shape(shape: Sequence[int], stride: int) -> tuple[int, int, int]:
    """Embedding grid of a preprocessed grid ``shape``: ``ceil(n / stride)`` per axis."""
    return tuple(-(-int(n) // stride) for n in shape)  # type: ignore[return-value]


def embedding_affine(cached_affine: np.ndarray, stride: int) -> np.ndarray:
    """voxel -> world of the embedding grid: block ``j`` is centred on preprocessed voxel
    ``s * j + (s - 1) / 2``."""
    to_cached = np.diag([float(stride)] * 3 + [1.0])
    to_cached[:3, 3] = (stride - 1) / 2.0
    return np.asarray(cached_affine, dtype=np.float64) @ to_cached


def _round_up(value: int, factor: int) -> int:
    return int(math.ceil(value / factor) * factor)


def tiles(
    padded: Sequence[int], window: Sequence[int], margin: int, block: int
) -> Iterator[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``(window_start, core_start, core_size)`` per tile; all multiples of ``block``; the cores
    partition the padded volume."""
    per_axis = []
    for n, w in zip(padded, window, strict=True):
        core = w - 2 * margin if w < n else n
        if core <= 0:
            raise ValueError(f"window {w} leaves no core with margin {margin}")
        axis = []
        for start in range(0, n, core):
            size = min(core, n - start)
            first = min(max(start - margin, 0), n - w)
            axis.append((first, start, size))
        per_axis.append(axis)
    for ax in per_axis[0]:
        for ay in per_axis[1]:
            for az in per_axis[2]:
                yield (
                    (ax[0], ay[0], az[0]),
                    (ax[1], ay[1], az[1]),
                    (ax[2], ay[2], az[2]),
                )


def pool_level(level: torch.Tensor, level_index: int, stride: int) -> torch.Tensor:
    """Level ``i`` (B, C, *cells) on the embedding grid of ``stride``: mean over each block."""
    factor = 2**level_index
    if factor == stride:
        return level
    if factor < stride:
        return F.avg_pool3d(level, kernel_size=stride // factor, ceil_mode=True)
    repeat = factor // stride
    for dim in (2, 3, 4):
        level = level.repeat_interleave(repeat, dim=dim)
    return level


@torch.no_grad()
def embed_volume(
    backbone: nn.Module,
    image: np.ndarray,
    out: np.ndarray,
    stride: int = 1,
    window: Sequence[int] = DEFAULT_WINDOW,
    margin: int = DEFAULT_MARGIN,
    device: torch.device | str = "cpu",
    amp: bool = False,
    progress=None,
) -> np.ndarray:
    """Write the voxel embedding of ``image`` into ``out``.

    Args:
        backbone: an FPN (``level_channels``, returns the pyramid, level 0 first).
        image: preprocessed (X, Y, Z) or (C, X, Y, Z) float32.
        out: (X', Y', Z', D) array (a float16 memmap) with ``(X', Y', Z') =
            embedding_shape((X, Y, Z), stride)`` and ``D = sum(level_channels)``.
        stride: 1, 2, 4 or 8.
        window, margin: tiling (preprocessed voxels); rounded up to the coarsest cell.
        progress: optional callable ``(done_tiles, total_tiles)``.
    """

    check_stride(stride)
    device = torch.device(device)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[None]
    shape = image.shape[1:]
    expected = (*embedding_shape(shape, stride), int(sum(backbone.level_channels)))
    if tuple(out.shape) != expected:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {expected}")
    block = max(alignment(len(backbone.level_channels)), stride)
    padded = tuple(_round_up(n, block) for n in shape)
    margin = _round_up(int(margin), block)
    window = tuple(
        min(max(_round_up(int(w), block), 2 * margin + block), p)
        for w, p in zip(window, padded, strict=True)
    )
    plan = list(tiles(padded, window, margin, block))
    was_training = backbone.training
    backbone.eval()
    try:
        for done, (first, core_start, core_size) in enumerate(plan):
            patch = padded_crop(image, first, window, 0.0)
            tensor = torch.from_numpy(np.ascontiguousarray(patch))[None].to(device)
            with autocast(device, amp):
                levels = backbone(tensor)
            parts = []
            for i, level in enumerate(levels):
                cell = 2**i
                lo = [(c - f) // cell for c, f in zip(core_start, first, strict=True)]
                hi = [lo_ + s // cell for lo_, s in zip(lo, core_size, strict=True)]
                core = level[:, :, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].float()
                parts.append(pool_level(core, i, stride))
            sizes = [min(p.shape[d] for p in parts) for d in (2, 3, 4)]
            block_out = torch.cat([p[:, :, : sizes[0], : sizes[1], : sizes[2]] for p in parts], 1)
            start = [c // stride for c in core_start]
            stop = [
                min(s + n, limit) for s, n, limit in zip(start, sizes, out.shape[:3], strict=True)
            ]
            if any(b <= a for a, b in zip(start, stop, strict=True)):
                continue  # a tile wholly in the padding
            values = block_out[
                0, :, : stop[0] - start[0], : stop[1] - start[1], : stop[2] - start[2]
            ]
            out[start[0] : stop[0], start[1] : stop[1], start[2] : stop[2]] = (
                values.permute(1, 2, 3, 0).cpu().numpy().astype(out.dtype, copy=False)
            )
            if progress is not None:
                progress(done + 1, len(plan))
    finally:
        backbone.train(was_training)
    return out


__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_WINDOW",
    "STRIDES",
    "check_stride",
    "embed_volume",
    "embedding_affine",
    "embedding_shape",
    "pool_level",
    "tiles",
]
