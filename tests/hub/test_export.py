"""Release folders (export -> --weights / import round trip) and MONAI bundles run end to end."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from voxssl.eval.monai_bundle import export_monai_bundle
from voxssl.hub.export import export_release
from voxssl.hub.resolve import resolve_weights
from voxssl.models.weights import load_backbone, read_plan

from .foreign import foreign_fpn_state

TINY = {"preset": "vox2vec", "base_channels": 4, "num_levels": 3}
PREPROCESSING = {
    "spacing": [1.0, 1.0, 2.0],
    "window_hu": [-1350.0, 1000.0],
    "crop_threshold_hu": -500.0,
}


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    from voxssl.hub.convert import import_foreign

    folder = tmp_path_factory.mktemp("tiny")
    torch.save(foreign_fpn_state(base=4, levels=3, blocks=2, seed=3), folder / "w.pt")
    return import_foreign(
        folder / "w.pt", folder / "backbone.safetensors", "vox2vec", preprocessing=PREPROCESSING
    ).path


@pytest.fixture(scope="module")
def segmentation_file(backbone_file, tmp_path_factory):
    from voxssl.models.segmentation import SegmentationModel
    from voxssl.models.segmentation_weights import SegmentationSpec, save_segmentation_weights

    backbone, plan = load_backbone(backbone_file)
    values = {
        "classes": [1, 2, 6],
        "head_kind": "linear",
        "head_in_channels": backbone.level_channels,
        "head_hidden": 8,
        "head_blocks_per_level": 1,
        "loss": "bce",
        "threshold": 0.5,
        "patch_size": [16, 16, 8],
        "sw_roi_size": [16, 16, 8],
        "sw_overlap": 0.5,
        "sw_mode": "gaussian",
        "body_restricted": False,
    }
    names = {
        f.name for f in dataclasses.fields(SegmentationSpec)
    }  # the spec is owned by voxssl.eval
    spec = SegmentationSpec(**{k: v for k, v in values.items() if k in names})
    head = spec.build_head()
    with torch.no_grad():  # a head that makes all three organs appear somewhere
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 2)
    model = SegmentationModel(backbone, head, loss_kind="bce")
    path = tmp_path_factory.mktemp("seg") / "model.safetensors"
    return save_segmentation_weights(path, model, spec, plan)


def test_release_round_trip(backbone_file, tmp_path):
    out = export_release(
        backbone_file, tmp_path / "my-release", license="CC-BY-4.0", description="tiny test model"
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "model.safetensors",
        "plan.json",
        "registry-entry.yaml",
    ]
    assert resolve_weights(out) == out / "model.safetensors"
    original, _ = load_backbone(backbone_file)
    released, plan = load_backbone(resolve_weights(out))
    for key, value in original.state_dict().items():
        assert torch.equal(value, released.state_dict()[key])
    card = (out / "README.md").read_text(encoding="utf-8")
    assert (
        plan.extra["converted_from"] == "vox2vec" and "CC-BY-4.0" in card and "`window_hu`" in card
    )
    import yaml

    entry = yaml.safe_load((out / "registry-entry.yaml").read_text(encoding="utf-8"))[0]
    from voxssl.hub.weights_cache import sha256_of

    assert entry["sha256"] == sha256_of(out / "model.safetensors") and entry["format"] == "voxssl"
    with pytest.raises(Exception, match="already exists"):
        export_release(backbone_file, out)


def _ct_nifti(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    hu = rng.uniform(-400, 800, size=(16, 16, 8)).astype(np.float32)  # all above the -500 HU crop
    affine = np.diag(
        [1.0, 1.0, 2.0, 1.0]
    )  # RAS at the plan's spacing: preprocessing is intensity only
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    path = folder / "case_0001.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), path)
    return path


@pytest.mark.multiprocess
def test_monai_bundle_segmentation_runs_end_to_end(segmentation_file, tmp_path):
    from voxssl.models.segmentation import probabilities_to_label
    from voxssl.models.segmentation_weights import load_segmentation_model

    bundle = export_monai_bundle(segmentation_file, tmp_path / "bundle")
    assert {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} == {
        "configs/inference.json",
        "configs/metadata.json",
        "models/model.pt",
        "docs/README.md",
    }
    image = _ct_nifti(tmp_path / "data")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",
            str(bundle),
            "--dataset_dir",
            str(image.parent),
            "--output_dir",
            str(tmp_path / "pred"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = nib.load(tmp_path / "pred" / "case_0001_seg.nii.gz")
    np.testing.assert_allclose(out.affine, nib.load(image).affine, atol=1e-5)
    label = np.asarray(out.dataobj)
    # independent expectation: voxssl's own model on the window-scaled image, voxssl's decision rule
    model, spec, _ = load_segmentation_model(segmentation_file)
    hu = np.asarray(nib.load(image).dataobj, dtype=np.float32)
    x = torch.from_numpy(np.clip((hu + 1350.0) / 2350.0, 0, 1))[None, None]
    with torch.no_grad():
        expected = probabilities_to_label(
            model.predict_probabilities(x)[0], spec.classes, "bce", 0.5
        )
    assert label.shape == expected.shape
    assert set(np.unique(label)) <= {0, 1, 2, 6} and len(np.unique(expected)) > 1
    np.testing.assert_array_equal(label, expected)


def test_monai_bundle_embedding_network_loads_weights(backbone_file, tmp_path):
    from monai.bundle import ConfigParser

    bundle = export_monai_bundle(backbone_file, tmp_path / "emb", roi_size=[16, 16, 8])
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    backbone, _ = load_backbone(backbone_file)
    x = torch.rand(1, 1, 16, 16, 8)
    with torch.no_grad():
        embedding = network.eval()(x)
        pyramid = backbone(x)
    assert embedding.shape == (1, 4 + 8 + 16, 16, 16, 8)
    torch.testing.assert_close(embedding[:, :4], pyramid[0])
    torch.testing.assert_close(embedding[:, 4:12, ::2, ::2, ::2], pyramid[1])
    assert read_plan(backbone_file).preprocessing["modality"] == "ct"


def test_pretraining_checkpoint_is_released_as_its_backbone(tmp_path):
    from voxssl.config.model import ModelConfig
    from voxssl.models.build import build_pretrain_model
    from voxssl.models.plan import Plan
    from voxssl.models.weights import save_weights

    config = ModelConfig(
        preset="hierarchical", base_channels=4, num_levels=3, projection="frozen_random"
    )
    model = build_pretrain_model(config)
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000010"
    checkpoint.mkdir(parents=True)
    save_weights(
        checkpoint / "model.safetensors",
        model.state_dict(),
        Plan.for_model(config, kind="pretrain"),
    )
    torch.save({"step": 10}, checkpoint / "state.pt")
    release = export_release(tmp_path / "run", tmp_path / "release")
    backbone, plan = load_backbone(release / "model.safetensors")
    assert plan.kind == "backbone" and "backbone only" in plan.extra["exported_from"]
    from safetensors import safe_open

    with safe_open(str(release / "model.safetensors"), framework="pt") as handle:
        keys = set(handle.keys())
    assert keys == set(model.backbone.state_dict())  # projector and reconstruction head dropped
    x = torch.rand(1, 1, 8, 8, 4)
    with torch.no_grad():
        for got, want in zip(backbone(x), model.backbone.eval()(x), strict=True):
            torch.testing.assert_close(got, want)


@pytest.mark.real
def test_monai_bundle_maps_a_real_lps_mr_back_to_its_grid(real_data, tmp_path):
    """Real MR (LPS, 3 mm): RAS + resampling + percentile scaling + crop, then Invertd back to the
    original grid. Run in-process (``monai.bundle.run``); the CLI path is covered above."""
    from monai.bundle import run

    from voxssl.hub.convert import import_foreign
    from voxssl.models.segmentation import SegmentationModel
    from voxssl.models.segmentation_weights import SegmentationSpec, save_segmentation_weights

    torch.save(
        {"state_dict": foreign_fpn_state(base=4, levels=3, blocks=2, seed=7)}, tmp_path / "mr.ckpt"
    )
    backbone_path = import_foreign(
        tmp_path / "mr.ckpt",
        tmp_path / "mr.safetensors",
        "hierarchical",
        modality="mr",
        preprocessing={"spacing": [4.5, 4.5, 4.5], "percentiles": [1.0, 99.99]},
    ).path
    backbone, plan = load_backbone(backbone_path)
    values = {
        "classes": [1, 6],
        "head_kind": "linear",
        "head_in_channels": backbone.level_channels,
        "head_hidden": 8,
        "head_blocks_per_level": 1,
        "loss": "ce",
        "threshold": 0.5,
        "patch_size": [32, 32, 16],
        "sw_roi_size": [32, 32, 16],
        "sw_overlap": 0.25,
        "sw_mode": "constant",
        "body_restricted": False,
    }
    names = {f.name for f in dataclasses.fields(SegmentationSpec)}
    spec = SegmentationSpec(**{k: v for k, v in values.items() if k in names})
    weights = save_segmentation_weights(
        tmp_path / "seg.safetensors",
        SegmentationModel(backbone, spec.build_head(), "ce"),
        spec,
        plan,
    )
    bundle = export_monai_bundle(weights, tmp_path / "bundle")
    data = tmp_path / "data"
    data.mkdir()
    (data / "ts_mr.nii.gz").symlink_to(real_data / "ts_mr.nii.gz")
    run(
        config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(bundle),
        dataset_dir=str(data),
        output_dir=str(tmp_path / "pred"),
    )
    source = nib.load(real_data / "ts_mr.nii.gz")
    out = nib.load(tmp_path / "pred" / "ts_mr_seg.nii.gz")
    assert out.shape == source.shape
    np.testing.assert_allclose(out.affine, source.affine, atol=1e-3)
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 6}
