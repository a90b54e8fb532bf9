"""Issue 15.5: label ids outside the organ vocabulary, and labels that mark no organ, are refused
at preprocess with one line naming the label file; such cases are not cached."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from tests.data.test_pipeline import LPS, run, write_case, write_recipe
from voxssl.data.cache import read_manifest


def _relabel(root, name, change):
    path = root / "labels" / f"{name}.nii.gz"
    seg = np.asarray(nib.load(path).dataobj)
    seg = change(seg.copy())
    nib.save(nib.Nifti1Image(seg.astype(np.uint8), LPS), path)
    return path


def test_unknown_ids_and_empty_labels_fail_at_preprocess_and_are_not_cached(tmp_path):
    root = tmp_path / "data"
    for i, name in enumerate(["good", "unknown", "empty"]):
        write_case(root, name, seed=i)

    def add_unknown(seg):
        seg[1:3, 1:3, 1:3] = 40
        seg[3:5, 1:3, 1:3] = 23
        return seg

    unknown = _relabel(root, "unknown", add_unknown)
    empty = _relabel(root, "empty", np.zeros_like)
    summary = run(write_recipe(tmp_path, root))
    assert summary.processed == ["ph/good"]
    reasons = {f.key: f.reason for f in summary.failed}
    assert set(reasons) == {"ph/unknown", "ph/empty"}
    assert reasons["ph/unknown"].startswith(str(unknown))
    assert "label ids [23, 40] are not in the organ vocabulary" in reasons["ph/unknown"]
    assert reasons["ph/empty"].startswith(str(empty)) and "no organ" in reasons["ph/empty"]
    assert all("\n" not in r for r in reasons.values())
    assert set(read_manifest(tmp_path / "cache")["cases"]) == {"ph/good"}
    assert not (tmp_path / "cache" / "ph" / "unknown").exists()
    assert not (tmp_path / "cache" / "ph" / "empty").exists()


def test_ignore_value_and_every_vocabulary_id_are_accepted(tmp_path):
    root = tmp_path / "data"
    write_case(root, "case", seed=0)

    def ignore_and_phantom_ids(seg):
        seg[1:3, 1:3, 1:3] = 255  # not annotated
        seg[3:5, 1:3, 1:3] = 19  # fat: a voxssl id the phantoms draw
        return seg

    _relabel(root, "case", ignore_and_phantom_ids)
    summary = run(write_recipe(tmp_path, root))
    assert summary.ok, summary.describe()
