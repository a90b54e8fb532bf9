"""padded_crop against a naive reference: pad the whole array with ``fill``, then slice."""

from __future__ import annotations

import numpy as np
import pytest

from voxssl.transforms.crop import padded_crop


def naive_crop(array, start, size, fill):
    margin = max(max(abs(int(s)) for s in start), max(size)) + max(array.shape[-3:])
    pad = [(0, 0)] * (array.ndim - 3) + [(margin, margin)] * 3
    padded = np.pad(array, pad, constant_values=fill)
    box = tuple(slice(margin + s, margin + s + n) for s, n in zip(start, size, strict=True))
    return padded[(..., *box)]


@pytest.mark.parametrize(
    "start",
    [(0, 0, 0), (2, 1, 3), (-3, 0, 0), (4, -2, 5), (-9, -9, -9), (20, 0, 0), (-20, 2, 1)],
)
@pytest.mark.parametrize(
    ("dtype", "fill"), [(np.float32, 0.0), (np.uint8, 255), (bool, False), (np.float16, -1.0)]
)
def test_matches_padding_then_slicing(start, dtype, fill):
    rng = np.random.default_rng(0)
    array = (rng.random((2, 7, 5, 9)) * 100).astype(dtype)
    size = (6, 4, 8)
    out = padded_crop(array, start, size, fill)
    assert out.dtype == array.dtype and out.shape == (2, *size)
    np.testing.assert_array_equal(out, naive_crop(array, start, size, fill))


def test_dtype_conversion_and_a_fresh_array():
    array = np.arange(4 * 4 * 4, dtype=np.float16).reshape(4, 4, 4)
    out = padded_crop(array, (0, 0, 0), (4, 4, 4), dtype=np.float32)
    assert out.dtype == np.float32 and not np.shares_memory(out, array)
    np.testing.assert_array_equal(out, array.astype(np.float32))


def test_needs_three_axes():
    with pytest.raises(ValueError, match="3 values"):
        padded_crop(np.zeros((4, 4, 4)), (0, 0), (2, 2))
