"""voxssl.utils.triple: exactly three values become a typed (x, y, z) tuple."""

from __future__ import annotations

import numpy as np
import pytest

from voxssl.utils.triple import float_triple, int_triple


def test_int_triple_from_shapes_arrays_and_json():
    assert int_triple(np.zeros((2, 5, 6, 7)).shape[-3:]) == (5, 6, 7)
    triple = int_triple(np.array([4, 5, 6], dtype=np.int64))
    assert triple == (4, 5, 6) and all(type(v) is int for v in triple)
    assert int_triple([1, "2", 3.0]) == (1, 2, 3)


def test_float_triple_from_arrays_and_json():
    triple = float_triple(np.array([0.5, 1.0, 2.5], dtype=np.float32))
    assert triple == (0.5, 1.0, 2.5) and all(type(v) is float for v in triple)
    assert float_triple([1, 2, 3]) == (1.0, 2.0, 3.0)


@pytest.mark.parametrize("values", [[], [1, 2], [1, 2, 3, 4]])
def test_anything_but_three_values_is_an_error(values):
    with pytest.raises(
        ValueError, match=rf"expected 3 integer values \(x, y, z\), got {len(values)}"
    ):
        int_triple(values)
    with pytest.raises(
        ValueError, match=rf"expected 3 float values \(x, y, z\), got {len(values)}"
    ):
        float_triple(values)
