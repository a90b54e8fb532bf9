"""Phantoms written straight into a cache read back through the cache's own reader, with the
values a naive windowing of the generated phantom gives."""

from __future__ import annotations

import numpy as np
import pytest

from voxssl.data.cache import open_cache
from voxssl.data.phantoms import generate_phantom
from voxssl.data.phantoms.cache import write_phantom_cache

SHAPE = (24, 20, 12)


@pytest.mark.parametrize("labelled", [False, True])
def test_phantom_cache_reads_back_windowed_phantoms(tmp_path, labelled):
    write_phantom_cache(
        tmp_path, 2, SHAPE, labelled=labelled, prefix="case", window_hu=(-1000.0, 1000.0)
    )
    cache = open_cache(tmp_path)
    cases = cache.cases()
    assert [c.case_id for c in cases] == ["case_000", "case_001"]
    for seed, case in enumerate(cases):
        phantom = generate_phantom(seed, "ct", shape=SHAPE)
        expected = np.zeros(SHAPE, np.float64)
        for index in np.ndindex(SHAPE):  # the window, voxel by voxel
            hu = float(phantom.image[index])
            expected[index] = min(max((hu + 1000.0) / 2000.0, 0.0), 1.0)
        image = np.asarray(case.image(), np.float64)
        assert image.shape[-3:] == SHAPE and case.spacing == tuple(phantom.spacing)
        np.testing.assert_allclose(image.reshape(SHAPE), expected, atol=1e-3)
        np.testing.assert_array_equal(case.body_mask(), phantom.image > -500)
        assert case.modality == "ct" and case.source == "phantoms"
        assert case.has_label is labelled
        if labelled:
            np.testing.assert_array_equal(case.label(), phantom.label)
        else:
            assert case.label() is None
