"""Issue 15.6 (third part): two DICOM series interleaved in one folder are reported as mixed
series, not as missing slices; a real missing slice still says so."""

from __future__ import annotations

import numpy as np
import pytest

from tests.data.test_readers import write_dicom_series
from voxssl.data.readers import read_volume
from voxssl.errors import DataError


def test_two_interleaved_series_0_7_mm_apart_are_reported_as_mixed_series(tmp_path):
    folder = tmp_path / "series"
    write_dicom_series(
        folder,
        np.zeros((6, 6, 5), np.int16),
        (1, 1, 2),
        (0, 0, 0),
        names=[f"a{z}.dcm" for z in range(5)],
    )
    write_dicom_series(
        folder,
        np.ones((6, 6, 5), np.int16),
        (1, 1, 2),
        (0, 0, 0.7),
        names=[f"b{z}.dcm" for z in range(5)],
    )
    with pytest.raises(DataError) as info:
        read_volume(folder)
    message = str(info.value)
    assert "several series are mixed" in message and "missing" not in message
    assert str(folder) in message and "\n" not in message


def test_a_missing_slice_is_still_reported_as_missing(tmp_path):
    folder = write_dicom_series(
        tmp_path / "series", np.zeros((4, 4, 6), np.int16), (1, 1, 2), (0, 0, 0)
    )
    (folder / "slice002.dcm").unlink()
    (folder / "slice004.dcm").unlink()
    with pytest.raises(DataError, match=r"slices are missing.*2 mm"):
        read_volume(folder)
