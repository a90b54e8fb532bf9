"""Real scans (../shared/data/real, skipped when absent): spacing, orientation, labels on the anatomy."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from voxssl.config.data import PreprocessConfig
from voxssl.data.case import Case
from voxssl.data.geometry import to_original_geometry
from voxssl.data.pipeline import preprocess_case
from voxssl.data.preprocess import invert_intensity_mapping, preprocess_volume
from voxssl.data.readers import read_case_label, read_volume

pytestmark = pytest.mark.real

LIVER, SPLEEN, RIGHT_KIDNEY, LEFT_KIDNEY = 6, 1, 2, 3


def centroid_index(label: np.ndarray, organ: int) -> np.ndarray:
    return np.argwhere(label == organ).mean(axis=0)


def check_anatomy_in_ras(label: np.ndarray) -> None:
    """RAS array order: +x towards the patient's right, +z superior."""
    liver, spleen = centroid_index(label, LIVER), centroid_index(label, SPLEEN)
    assert liver[0] > spleen[0], "liver must lie on the patient's right (+x in RAS)"
    right, left = centroid_index(label, RIGHT_KIDNEY), centroid_index(label, LEFT_KIDNEY)
    assert right[0] > left[0]
    assert liver[2] > (right[2] + left[2]) / 2, "liver centre above the kidneys' (+z superior)"


def test_ts_ct_preprocessed_with_its_label(real_data):
    case = Case(
        "ts_ct", real_data / "ts_ct.nii.gz", "ct", label=real_data / "ts_ct_label_btcv.nii.gz"
    )
    image, label, body, meta = preprocess_case(case, PreprocessConfig())
    assert meta["spacing"] == [1.0, 1.0, 2.0]
    assert np.allclose(np.linalg.norm(np.array(meta["affine"])[:3, :3], axis=0), [1.0, 1.0, 2.0])
    assert nib.aff2axcodes(np.array(meta["affine"])) == ("R", "A", "S")
    assert image.shape[-3:] == label.shape == body.shape
    check_anatomy_in_ras(label)
    assert body[label > 0].mean() > 0.99  # organs lie inside the body mask

    original_image = np.asarray(nib.load(case.image).dataobj)
    original_label = np.asarray(nib.load(case.label).dataobj)
    back, affine = to_original_geometry(label, meta)
    assert np.array_equal(back, original_label)  # 3 mm -> 1x1x2 mm upsampling: exact round trip
    assert np.allclose(affine, nib.load(case.image).affine)
    # The same anatomy: liver HU from the cached image (inverse-windowed) vs the original scan.
    hu = invert_intensity_mapping(image, meta["intensity"])
    cached_liver, original_liver = (
        hu[label == LIVER].mean(),
        original_image[original_label == LIVER].mean(),
    )
    assert 20 < cached_liver < 200  # soft tissue (this scan's liver is ~45 HU)
    assert abs(cached_liver - original_liver) < 5


def test_ts_mr_lps_preprocessed_with_its_label(real_data):
    case = Case(
        "ts_mr", real_data / "ts_mr.nii.gz", "mr", label=real_data / "ts_mr_label_btcv.nii.gz"
    )
    assert nib.aff2axcodes(nib.load(case.image).affine) == ("L", "P", "S")
    image, label, _body, meta = preprocess_case(case, PreprocessConfig())
    assert nib.aff2axcodes(np.array(meta["affine"])) == ("R", "A", "S")
    assert image.min() >= 0 and image.max() <= 1 and image.dtype == np.float32
    check_anatomy_in_ras(label)
    assert meta["label_classes"] == sorted(
        set(np.unique(np.asarray(nib.load(case.label).dataobj)).tolist()) - {0}
    )
    back, _ = to_original_geometry(label, meta)
    original = np.asarray(nib.load(case.label).dataobj)
    kept = back > 0
    assert np.array_equal(
        back[kept], original[kept]
    )  # exact where the MR crop (scaled > 0.3) kept the voxels
    assert (original[~kept] > 0).mean() < 0.02
    # a world point: the liver centroid in world mm is where it was
    world_before = nib.load(case.label).affine @ [*centroid_index(original, LIVER), 1]
    world_after = np.array(meta["affine"]) @ [*centroid_index(label, LIVER), 1]
    assert np.abs(world_before - world_after).max() < 1.5


def test_dicom_series_matches_its_ras_label_and_shows_contrast_liver(real_data):
    volume = read_volume(real_data / "dicom_ct")
    assert volume.spatial_shape == (512, 512, 20)
    assert np.allclose(
        volume.spacing, (0.977, 0.977, 2.0), atol=2e-3
    )  # positions, not SliceThickness (3)
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert -1100 < volume.data.min() < -900  # rescale intercept applied: air near -1000 HU
    case = Case(
        "dicom", real_data / "dicom_ct", "ct", label=real_data / "dicom_ct_label_btcv_RAS.nii.gz"
    )
    label = read_case_label(case, volume)  # RAS label vs LPS series: compared in RAS
    raw_liver_hu = volume.data[label == LIVER].mean()
    assert 60 < raw_liver_hu < 200  # portal-venous contrast CT
    image, cached_label, _, meta = preprocess_volume(volume, "ct", PreprocessConfig(), label)
    hu = invert_intensity_mapping(image, meta["intensity"])
    assert abs(hu[cached_label == LIVER].mean() - raw_liver_hu) < 10
    liver, spleen = centroid_index(cached_label, LIVER), centroid_index(cached_label, SPLEEN)
    assert liver[0] > spleen[0]
    # 0.977 -> 1.0 mm is a (slight) downsampling: not exact, but every organ survives the round trip
    back, _ = to_original_geometry(cached_label, meta)
    stored_label = nib.orientations.apply_orientation(
        label,
        nib.orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), volume.orientation),
    )
    for organ in (LIVER, SPLEEN):
        a, b = back == organ, stored_label == organ
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.97
