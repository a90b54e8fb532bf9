"""The padded crop: ``array[..., start:start + size]`` over the last three axes, where the box may
leave the array (negative starts, past the end, or entirely outside); what lies outside is
``fill``. One implementation for the pretraining views, the downstream patches and the cached
feature pyramids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def padded_crop(
    array: np.ndarray,
    start: Sequence[int],
    size: Sequence[int],
    fill: float | bool = 0,
    dtype: np.dtype | type | None = None,
) -> np.ndarray:
    """A new ``(..., *size)`` array (``dtype``, default ``array``'s) cut from the 3 last axes."""
    spatial = array.shape[-3:]
    if len(start) != 3 or len(size) != 3:
        raise ValueError(f"start {tuple(start)} and size {tuple(size)} must have 3 values")
    src, dst = [], []
    for s, n, dim in zip(start, size, spatial, strict=True):
        lo, hi = max(int(s), 0), min(int(s) + int(n), dim)
        hi = max(hi, lo)  # a box entirely outside the array takes nothing from it
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out = np.full(
        (*array.shape[:-3], *(int(n) for n in size)),
        fill,
        dtype=array.dtype if dtype is None else dtype,
    )
    target: tuple[Any, ...] = (..., *dst)
    source: tuple[Any, ...] = (..., *src)
    out[target] = array[source]
    return out


__all__ = ["padded_crop"]
