"""Issue 15.10: the exported MONAI bundle gives the labels ``voxssl predict`` gives, voxel for
voxel, on the shared real CT (body mask on: CT) and on the shared real MR resampled to
1.7 x 1.7 x 2.5 mm (percentiles taken before resampling, as voxssl does).

Tolerance: the bundle runs voxssl's own preprocessing, sliding window settings and decision on
the same CPU, so the label maps are expected to be identical; at most 1 voxel in 10,000 may
differ, to absorb a tie between two classes that float summation order could flip (the measured
count is printed: 0 in every run so far)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from tests.robustness.conftest import make_segmentation_weights
from voxssl.eval.monai_bundle import export_monai_bundle
from voxssl.eval.predict import predict_files

MAX_DIFFERENT_FRACTION = 1e-4

CASES = {
    # name: (file, modality, plan spacing, window)
    "ct": ("ts_ct.nii.gz", "ct", (4.0, 4.0, 4.0), (32, 32, 32)),
    "mr": ("ts_mr.nii.gz", "mr", (1.7, 1.7, 2.5), (48, 48, 16)),
}


def _run_bundle(bundle, data, out):
    from monai.bundle import run

    run(
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        dataset_dir=str(data),
        output_dir=str(out),
    )


@pytest.mark.real
@pytest.mark.parametrize("case", sorted(CASES))
def test_bundle_labels_equal_voxssl_predict(real_data, tmp_path, case):
    filename, modality, spacing, roi = CASES[case]
    weights = make_segmentation_weights(
        tmp_path / "model.safetensors", modality=modality, spacing=spacing, roi=roi, seed=1
    )
    data = tmp_path / "data"
    data.mkdir()
    (data / filename).symlink_to(real_data / filename)
    [ours] = predict_files(
        weights, [data / filename], tmp_path / "voxssl", progress=False, preview=False
    )
    bundle = export_monai_bundle(weights, tmp_path / "bundle")
    _run_bundle(bundle, data, tmp_path / "bundle_out")
    theirs = tmp_path / "bundle_out" / ours.name
    a, b = nib.load(ours), nib.load(theirs)
    assert a.shape == b.shape == nib.load(real_data / filename).shape
    np.testing.assert_allclose(b.affine, a.affine, atol=1e-5)
    label_a, label_b = np.asarray(a.dataobj), np.asarray(b.dataobj)
    assert len(np.unique(label_a)) > 1  # the test weights paint organs: a real comparison
    different = int((label_a != label_b).sum())
    print(f"{case}: {different} of {label_a.size} voxels differ")
    assert different <= MAX_DIFFERENT_FRACTION * label_a.size


def test_embedding_bundle_writes_the_embedding_on_the_preprocessed_grid(tmp_path):
    """Backbone-only weights: the bundle writes a D-channel NIfTI with the preprocessed affine."""
    import torch

    from tests.robustness.conftest import TINY_MODEL, write_ct
    from voxssl.config.data import PreprocessConfig
    from voxssl.config.model import model_config_from_dict
    from voxssl.data.preprocess import preprocess_volume
    from voxssl.data.readers import read_volume
    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan, preprocessing_plan
    from voxssl.models.weights import save_weights

    config = model_config_from_dict(TINY_MODEL)
    torch.manual_seed(0)
    backbone = build_backbone(config)
    preprocess = PreprocessConfig()
    preprocess.ct.spacing = (4.0, 4.0, 4.0)
    weights = save_weights(
        tmp_path / "backbone.safetensors",
        backbone.state_dict(),
        Plan.for_model(config, preprocessing=preprocessing_plan("ct", preprocess)),
    )
    scan = write_ct(tmp_path / "data" / "ct.nii.gz", shape=(24, 20, 12))
    bundle = export_monai_bundle(weights, tmp_path / "bundle", roi_size=[16, 16, 16])
    _run_bundle(bundle, tmp_path / "data", tmp_path / "out")
    out = nib.load(tmp_path / "out" / "ct_embedding.nii.gz")
    _, _, _, meta = preprocess_volume(read_volume(scan), "ct", preprocess)
    assert out.shape == (*meta["shape"], sum(backbone.level_channels))
    np.testing.assert_allclose(out.affine, np.asarray(meta["affine"]), atol=1e-5)
