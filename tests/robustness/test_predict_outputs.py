"""Issue 14.6 (predictions keep the input's qform/sform codes) and 14.7 (a PNG preview beside each
prediction: three orthogonal slices with the labels, unless --no-preview)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from PIL import Image

from tests.data.test_readers import write_dicom_series
from voxssl.eval.overlay import ORGAN_COLOURS

from .cli import run_cli
from .conftest import write_ct


def _scan_with_codes(path, qform_code, sform_code, sform_shift=0.0):
    write_ct(path)
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    affine = np.diag([4.0, -4.0, 4.0, 1.0])
    affine[:3, 3] = (-80.0, 70.0, -40.0)
    out = nib.Nifti1Image(data, affine)
    out.set_qform(affine, code=qform_code)
    sform = affine.copy()
    sform[:3, 3] += sform_shift  # the sform wins when its code is set
    out.set_sform(sform, code=sform_code)
    nib.save(out, path)
    return path


def test_predictions_keep_the_inputs_qform_and_sform(ct_weights, tmp_path, capsys):
    inputs = [
        _scan_with_codes(tmp_path / "aligned.nii.gz", qform_code=1, sform_code=2, sform_shift=0.5),
        _scan_with_codes(tmp_path / "qonly.nii.gz", qform_code=1, sform_code=0),
        _scan_with_codes(tmp_path / "mni.nii.gz", qform_code=0, sform_code=4),
    ]
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        ["predict", "-w", ct_weights, *inputs, "-o", out, "-q", "--no-preview"], capsys
    )
    assert code == 0, stderr
    for source_path in inputs:
        source = nib.load(source_path).header
        written = nib.load(out / source_path.name.replace(".nii.gz", "_seg.nii.gz"))
        header = written.header
        assert int(header["qform_code"]) == int(source["qform_code"]), source_path.name
        assert int(header["sform_code"]) == int(source["sform_code"]), source_path.name
        if int(source["qform_code"]):
            np.testing.assert_allclose(header.get_qform(), source.get_qform(), atol=1e-5)
        if int(source["sform_code"]):
            np.testing.assert_allclose(header.get_sform(), source.get_sform(), atol=1e-5)
        np.testing.assert_allclose(written.affine, nib.load(source_path).affine, atol=1e-5)


def test_dicom_input_is_written_with_scanner_codes(ct_weights, tmp_path, capsys):
    volume = np.full((24, 20, 6), -1000, np.int16)
    volume[4:20, 4:16, :] = 40
    series = write_dicom_series(tmp_path / "series", volume, (4, 4, 4), (0, 0, 0))
    out = tmp_path / "out"
    code, _, stderr = run_cli(["predict", "-w", ct_weights, series, "-o", out, "-q"], capsys)
    assert code == 0, stderr
    header = nib.load(out / "series_seg.nii.gz").header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 1


def test_a_preview_png_shows_three_orthogonal_slices_with_the_labels(ct_weights, tmp_path, capsys):
    scan = write_ct(tmp_path / "ct.nii.gz", shape=(40, 36, 20), spacing=(4.0, 4.0, 8.0))
    out = tmp_path / "out"
    code, _, stderr = run_cli(["predict", "-w", ct_weights, scan, "-o", out, "-q"], capsys)
    assert code == 0, stderr
    label = np.asarray(nib.load(out / "ct_seg.nii.gz").dataobj)
    preview = out / "ct_seg.png"
    assert preview.is_file()
    picture = np.asarray(Image.open(preview).convert("RGB"))
    # three panels at 4 mm per pixel: axial 40 x 36, coronal 40 x 20*2, sagittal 36 x 20*2
    assert picture.shape[1] >= 40 + 40 + 36 and picture.shape[0] >= 40
    # every organ the prediction contains is drawn in its colour (blended over grey)
    organs = [int(v) for v in np.unique(label) if v]
    assert organs
    for organ in organs:
        colour = ORGAN_COLOURS[organ].astype(int)
        tinted = np.abs(picture.astype(int) - colour).sum(axis=-1)
        assert (tinted < 200).any(), organ


def test_no_preview_writes_only_the_label_map(ct_weights, tmp_path, capsys):
    scan = write_ct(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        ["predict", "-w", ct_weights, scan, "-o", out, "-q", "--no-preview"], capsys
    )
    assert code == 0, stderr
    assert (out / "ct_seg.nii.gz").is_file() and not list(out.glob("*.png"))
