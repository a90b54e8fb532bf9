"""Issue 15.1: a NIfTI header that declares more voxels than the file can hold is refused before
anything is allocated, with one line naming the file and the declared shape."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxssl.data.readers import read_volume
from voxssl.errors import ConfigError, DataError


def lying_header(path: Path, shape=(1000, 1000, 1000), dtype=np.int16) -> Path:
    """A header that declares ``shape`` followed by a few hundred bytes of voxels (about 1 KB).

    NIfTI-1 stores dimensions as int16; larger ones need a NIfTI-2 header (int64 dimensions)."""
    nifti2 = max(shape) > 32767
    header = nib.Nifti2Header() if nifti2 else nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    offset = 544 if nifti2 else 352
    header["vox_offset"] = offset
    raw = header.binaryblock
    raw += b"\x00" * (offset - len(raw)) + b"\x01\x02" * 300
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


@pytest.mark.parametrize("name", ["big.nii.gz", "big.nii"])
@pytest.mark.parametrize("shape", [(1000, 1000, 1000), (100000, 100000, 100000)])
def test_declared_shape_larger_than_the_file_is_one_line_naming_file_and_shape(
    tmp_path, name, shape
):
    path = lying_header(tmp_path / name, shape)
    with pytest.raises(DataError) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and str(shape) in message


def test_voxel_limit_is_configurable_by_environment_and_argument(tmp_path, monkeypatch):
    data = np.zeros((40, 40, 40), np.int16)  # 64000 voxels; compresses well below its size
    path = tmp_path / "ok.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    assert read_volume(path).spatial_shape == (40, 40, 40)
    with pytest.raises(DataError, match=r"ok.nii.gz.*\(40, 40, 40\).*VOXSSL_MAX_VOXELS"):
        read_volume(path, max_voxels=1000)
    monkeypatch.setenv("VOXSSL_MAX_VOXELS", "1000")
    with pytest.raises(DataError, match=r"64000 voxels.*above the limit of 1000"):
        read_volume(path)
    monkeypatch.setenv("VOXSSL_MAX_VOXELS", "lots")
    with pytest.raises(ConfigError, match="VOXSSL_MAX_VOXELS"):
        read_volume(path)


def test_dicom_series_above_the_voxel_limit_is_refused_before_decoding(tmp_path):
    from tests.data.test_readers import write_dicom_series

    folder = write_dicom_series(
        tmp_path / "series", np.zeros((8, 8, 4), np.int16), (1, 1, 2), (0, 0, 0)
    )
    assert read_volume(folder).spatial_shape == (8, 8, 4)
    with pytest.raises(DataError, match=r"series.*\(8, 8, 4\).*above the limit of 100"):
        read_volume(folder, max_voxels=100)


# Peak RSS of this process image: VmHWM (ru_maxrss would include the high-water mark of the
# pytest process it was forked from, which Linux carries across exec).
_MEASURE = """
import json, sys
from voxssl.data.readers import read_volume
from voxssl.errors import ConfigError, DataError

def peak_kb():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))

before = peak_kb()
try:
    read_volume(sys.argv[1])
    outcome = "read"
except DataError as err:
    outcome = str(err)
print(json.dumps({"before_kb": before, "after_kb": peak_kb(), "outcome": outcome}))
"""


@pytest.mark.parametrize("name", ["big.nii.gz", "big.nii"])
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
@pytest.mark.multiprocess
def test_a_1kb_file_declaring_1000_cubed_int16_stays_within_a_small_memory_bound(tmp_path, name):
    """Peak RSS of a fresh process that reads the lying file (2 GB declared): the read must not
    raise the peak by more than 100 MB (before the fix it reached 2.0 GB)."""
    path = lying_header(tmp_path / name)
    assert path.stat().st_size < 2000
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, check=True
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["outcome"] != "read" and str(path) in measured["outcome"]
    grown_mb = (measured["after_kb"] - measured["before_kb"]) / 1024
    assert grown_mb < 100, measured


def test_preprocess_reports_the_lying_file_and_caches_nothing(tmp_path):
    """Through ``voxssl preprocess``: the case fails with the one-line reason, others are cached;
    ``preprocess.max_voxels`` in the recipe is the limit there."""
    from tests.data.test_pipeline import run, write_case, write_recipe

    root = tmp_path / "data"
    write_case(root, "good", seed=0, label=False)
    (root / "labels").mkdir()
    lying_header(root / "images" / "big.nii.gz")
    summary = run(write_recipe(tmp_path, root))
    assert summary.processed == ["ph/good"]
    [failure] = summary.failed
    assert "big.nii.gz: the header declares shape (1000, 1000, 1000)" in failure.reason
    assert not (tmp_path / "cache" / "ph" / "big").exists()
    (tmp_path / "other").mkdir()
    summary = run(write_recipe(tmp_path / "other", root), "preprocess.max_voxels=100")
    assert any(
        f.key == "ph/good" and "above the limit of 100 voxels" in f.reason for f in summary.failed
    )
