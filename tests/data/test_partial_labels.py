"""Partial labels (FLARE23): the cache records which classes a case annotates."""

import nibabel as nib
import numpy as np

from voxssl.config.data import PreprocessConfig
from voxssl.data.case import Case
from voxssl.data.pipeline import preprocess_case


def _write(path, data):
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), str(path))
    return path


def _case(tmp_path, partial: bool) -> Case:
    image = np.full((20, 20, 10), -1000, np.int16)
    image[4:16, 4:16, 2:8] = 40
    label = np.zeros(image.shape, np.uint8)
    label[6:10, 6:10, 3:6] = 6
    return Case(
        case_id="c1",
        image=_write(tmp_path / "img.nii.gz", image),
        label=_write(tmp_path / "lab.nii.gz", label),
        modality="ct",
        metadata={"partial_labels": partial},
    )


def test_partial_label_lists_only_present_classes(tmp_path):
    *_, meta = preprocess_case(_case(tmp_path, partial=True), PreprocessConfig())
    assert meta["annotated"] == [6]


def test_full_label_is_not_marked_partial(tmp_path):
    *_, meta = preprocess_case(_case(tmp_path, partial=False), PreprocessConfig())
    assert meta["annotated"] is None
    assert meta["label_classes"] == [6]
