"""Issue 15.8: a scan thinner than the inference window is padded by repeating its edge slices
(not with air), with a warning; CT labels stay inside the body mask unless --no-body-mask."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

from voxssl.data.body_mask import body_mask

from .cli import run_cli
from .conftest import write_ct

WINDOW = 16  # slices of the test weights' window (ct_weights: roi 16^3 at 4 mm)


def test_thin_scan_is_padded_with_its_edge_slices_and_warned_about(
    ct_weights, tmp_path, capsys, caplog
):
    thin = write_ct(tmp_path / "thin.nii.gz", shape=(40, 36, 6))
    data = np.asarray(nib.load(thin).dataobj)
    before, after = (WINDOW - 6) // 2, WINDOW - 6 - (WINDOW - 6) // 2
    padded = tmp_path / "padded.nii.gz"  # the same scan with its edge slices repeated on disk
    affine = nib.load(thin).affine.copy()
    affine[:3, 3] -= affine[:3, 2] * before
    nib.save(
        nib.Nifti1Image(np.pad(data, ((0, 0), (0, 0), (before, after)), "edge"), affine), padded
    )

    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code, _, stderr = run_cli(
            ["predict", "-w", ct_weights, thin, padded, "-o", out, "-q", "--no-preview"], capsys
        )
    assert code == 0, stderr
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    thin_warnings = [w for w in warnings if "thinner than" in w]
    assert len(thin_warnings) == 1 and str(thin) in thin_warnings[0]
    assert "6 slices" in thin_warnings[0] and f"{WINDOW}-slice window" in thin_warnings[0]
    label_thin = np.asarray(nib.load(out / "thin_seg.nii.gz").dataobj)
    label_padded = np.asarray(nib.load(out / "padded_seg.nii.gz").dataobj)
    # what the model saw beyond the scan's ends is its own edge slices, not air
    assert label_thin.any() and not label_thin.all()
    np.testing.assert_array_equal(label_thin, label_padded[:, :, before : before + 6])


def test_ct_labels_stay_inside_the_body_unless_asked(ct_weights, tmp_path, capsys):
    scan = write_ct(tmp_path / "ct.nii.gz", shape=(40, 36, 16))
    hu = np.asarray(nib.load(scan).dataobj)
    outside = ~body_mask(hu.astype(np.float32), -500.0)
    assert outside.any()
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        ["predict", "-w", ct_weights, scan, "-o", out, "-q", "--no-preview"], capsys
    )
    assert code == 0, stderr
    label = np.asarray(nib.load(out / "ct_seg.nii.gz").dataobj)
    assert label.any() and not label[outside].any()

    code, _, stderr = run_cli(
        [
            "predict",
            "-w",
            ct_weights,
            scan,
            "-o",
            tmp_path / "free",
            "-q",
            "--no-preview",
            "--no-body-mask",
        ],
        capsys,
    )
    assert code == 0, stderr
    free = np.asarray(nib.load(tmp_path / "free" / "ct_seg.nii.gz").dataobj)
    assert free[outside].any()  # the random head paints the air: the mask above did the work
