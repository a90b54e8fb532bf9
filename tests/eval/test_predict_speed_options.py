"""``voxssl predict``'s speed options: the channels-last layout changes nothing but the speed, the
overlap and window batch size reach the sliding window, bad values are one clear error."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from voxssl.config.model import ModelConfig
from voxssl.device import CPU_CHANNELS_LAST_MIN_VOXELS

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny_weights_and_scan(tmp_path_factory):
    from voxssl.config.data import CTPreprocessConfig, PreprocessConfig
    from voxssl.data.phantoms.generate import generate_phantom
    from voxssl.models.build import build_backbone, level_channels
    from voxssl.models.plan import Plan, preprocessing_plan
    from voxssl.models.segmentation import SegmentationModel
    from voxssl.models.segmentation_weights import SegmentationSpec, save_segmentation_weights

    cfg = ModelConfig(preset="hierarchical", base_channels=2, num_levels=3, projection_channels=3)
    torch.manual_seed(0)
    backbone = build_backbone(cfg)
    spec = SegmentationSpec(
        classes=[1, 2],
        head_kind="linear",
        head_in_channels=level_channels(cfg),
        head_hidden=8,
        head_blocks_per_level=1,
        loss="bce",
        threshold=0.5,
        sw_roi_size=[32, 32, 16],  # 16384 voxels: level 0 and 1 run channels-last on CPU
        sw_overlap=0.5,
        sw_mode="gaussian",
        body_restricted=False,
    )
    head = spec.build_head()
    with torch.no_grad():  # a head that answers: some voxels above the threshold
        for p in head.parameters():
            p.mul_(20.0)
    model = SegmentationModel(backbone, head, loss_kind="bce")
    preprocess = PreprocessConfig(ct=CTPreprocessConfig(spacing=(5.0, 5.0, 10.0)))
    plan = Plan.for_model(cfg, preprocessing_plan("ct", preprocess, 1))
    tmp_path = tmp_path_factory.mktemp("predict_speed")
    weights = save_segmentation_weights(tmp_path / "model.safetensors", model, spec, plan)
    phantom = generate_phantom(0, "ct", shape=(64, 56, 24))
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(phantom.image.astype(np.int16), phantom.affine), str(scan))
    return weights, scan


def predict(weights, scan, out, **options):
    from voxssl.eval.predict import predict_files

    (path,) = predict_files(weights, [scan], out, device="cpu", progress=False, **options)
    return np.asarray(nib.load(str(path)).dataobj)


def test_channels_last_levels_give_the_same_prediction(
    tiny_weights_and_scan, tmp_path, monkeypatch
):
    from voxssl.eval import inference
    from voxssl.eval import predict as predict_module

    weights, scan = tiny_weights_and_scan
    seen = []
    real = inference.predict_probabilities

    def spy(model, *args, **kwargs):
        seen.append(model.backbone.channels_last_min_voxels)
        probs = real(model, *args, **kwargs)
        seen.append(probs)
        return probs

    monkeypatch.setattr(predict_module, "predict_probabilities", spy)
    laid_out = predict(weights, scan, tmp_path / "a")
    monkeypatch.setattr(predict_module, "apply_memory_layout", lambda model, device: model)
    contiguous = predict(weights, scan, tmp_path / "b")
    assert seen[0] == CPU_CHANNELS_LAST_MIN_VOXELS and seen[2] is None
    torch.testing.assert_close(seen[1], seen[3], rtol=1e-4, atol=1e-5)
    assert 0 < (laid_out > 0).sum() < laid_out.size  # a real decision, not all or nothing
    np.testing.assert_array_equal(laid_out, contiguous)


def test_overlap_and_window_batch_reach_the_sliding_window(
    tiny_weights_and_scan, tmp_path, monkeypatch
):
    from voxssl.eval import inference
    from voxssl.eval import predict as predict_module

    weights, scan = tiny_weights_and_scan
    calls = []
    real = inference.predict_probabilities

    def spy(model, image, roi, overlap, mode, sw_batch_size, device, amp, *args, **kwargs):
        calls.append((overlap, sw_batch_size, amp))
        return real(model, image, roi, overlap, mode, sw_batch_size, device, amp, *args, **kwargs)

    monkeypatch.setattr(predict_module, "predict_probabilities", spy)
    predict(weights, scan, tmp_path / "a")
    predict(weights, scan, tmp_path / "b", sw_overlap=0.25, sw_batch_size=3, amp="fp32")
    assert calls == [(0.5, 2, True), (0.25, 3, "fp32")]


@pytest.mark.parametrize(
    "options", [{"sw_overlap": 1.0}, {"sw_overlap": -0.1}, {"sw_batch_size": 0}]
)
def test_bad_sliding_window_options_are_one_clear_error(tiny_weights_and_scan, tmp_path, options):
    from voxssl.errors import ConfigError

    weights, scan = tiny_weights_and_scan
    with pytest.raises(ConfigError, match="overlap must be in"):
        predict(weights, scan, tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_bf16_on_cpu_is_refused(tiny_weights_and_scan, tmp_path):
    from voxssl.errors import ConfigError

    weights, scan = tiny_weights_and_scan
    with pytest.raises(ConfigError, match="bf16"):
        predict(weights, scan, tmp_path / "out", amp="bf16")
