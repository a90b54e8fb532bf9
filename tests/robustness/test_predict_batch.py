"""Issue 15.2: ``voxssl predict`` on a batch: unique output names for inputs that share a name,
every good input processed when one fails, a summary of the failures and a non-zero exit."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from tests.data.test_readers import write_dicom_series

from .cli import run_cli
from .conftest import write_ct


def test_inputs_with_the_same_name_get_their_own_predictions(ct_weights, tmp_path, capsys):
    first = write_ct(tmp_path / "p1" / "ct.nii.gz", seed=1)
    second = write_ct(tmp_path / "p2" / "ct.nii.gz", shape=(36, 40, 20), seed=2)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        ["predict", "-w", ct_weights, first, second, "--out", out, "-q"], capsys
    )
    assert code == 0, stderr
    written = sorted(p.name for p in out.glob("*.nii.gz"))
    assert written == ["p1_ct_seg.nii.gz", "p2_ct_seg.nii.gz"]
    assert nib.load(out / "p1_ct_seg.nii.gz").shape == (40, 36, 20)
    assert nib.load(out / "p2_ct_seg.nii.gz").shape == (36, 40, 20)
    assert sorted(stdout.split()) == sorted(str(out / n) for n in written)


def test_dicom_folders_with_the_same_name_get_their_own_predictions(ct_weights, tmp_path, capsys):
    volume = np.full((24, 20, 6), -1000, np.int16)
    volume[4:20, 4:16, :] = 40
    a = write_dicom_series(tmp_path / "a" / "series", volume, (4, 4, 4), (0, 0, 0))
    b = write_dicom_series(tmp_path / "b" / "series", volume[:, :, :5], (4, 4, 4), (0, 0, 0))
    out = tmp_path / "out"
    code, _, stderr = run_cli(["predict", "-w", ct_weights, a, b, "-o", out, "-q"], capsys)
    assert code == 0, stderr
    assert nib.load(out / "a_series_seg.nii.gz").shape == (24, 20, 6)
    assert nib.load(out / "b_series_seg.nii.gz").shape == (24, 20, 5)


def test_one_bad_input_does_not_stop_the_batch(ct_weights, tmp_path, capsys):
    good = [write_ct(tmp_path / f"good{i}.nii.gz", seed=i) for i in range(2)]
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti at all")
    empty = write_ct(tmp_path / "air.nii.gz")
    nib.save(nib.Nifti1Image(np.full((20, 20, 10), -1000, np.int16), np.eye(4)), empty)
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        ["predict", "-w", ct_weights, good[0], corrupt, empty, good[1], "-o", out, "-q"], capsys
    )
    assert code == 1
    assert (out / "good0_seg.nii.gz").is_file() and (out / "good1_seg.nii.gz").is_file()
    assert not (out / "corrupt_seg.nii.gz").exists() and not (out / "air_seg.nii.gz").exists()
    assert "2 of 4 input(s) failed" in stderr
    failure_lines = [line for line in stderr.splitlines() if line.strip().startswith("- ")]
    assert len(failure_lines) == 2
    assert str(corrupt) in failure_lines[0] and str(empty) in failure_lines[1]
    assert "Traceback" not in stderr
    assert str(out / "good1_seg.nii.gz") in stdout  # what was written is still listed


def test_the_same_input_twice_is_predicted_once(ct_weights, tmp_path, capsys):
    scan = write_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        ["predict", "-w", ct_weights, scan, tmp_path / "." / "ct.nii.gz", "-o", out, "-q"], capsys
    )
    assert code == 0, stderr
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["ct_seg.nii.gz"]
    assert len(stdout.split()) == 1
