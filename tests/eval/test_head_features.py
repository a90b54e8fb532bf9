"""head.features: the head reads the projected voxel embedding or the raw decoder maps, the same
rule for voxssl-pretrained and imported (projection-free) weights, kept with the trained head."""

from __future__ import annotations

import pytest
import torch

from voxssl.config.model import ModelConfig
from voxssl.models.build import build_backbone
from voxssl.models.features import backbone_pyramid, pyramid_channels
from voxssl.models.plan import Plan
from voxssl.models.segmentation import SegmentationModel
from voxssl.models.segmentation_heads import build_head
from voxssl.models.segmentation_weights import (
    SegmentationSpec,
    load_segmentation_model,
    save_segmentation_weights,
)


def _backbone(projection: str):
    torch.manual_seed(0)
    return build_backbone(
        ModelConfig(
            preset="hierarchical",
            base_channels=2,
            num_levels=3,
            projection=projection,
            projection_channels=4,
        )
    ).eval()


def test_raw_reads_the_decoder_maps_projected_the_embedding():
    backbone = _backbone("learned")
    x = torch.rand(1, 1, 16, 16, 8)
    assert pyramid_channels(backbone, "projected") == [4, 4, 4]
    assert pyramid_channels(backbone, "raw") == [2, 4, 8]
    with torch.no_grad():
        raw = backbone_pyramid(backbone, x, "raw")
        projected = backbone_pyramid(backbone, x, "projected")
        expected = backbone.forward_features(x)
    assert [t.shape[1] for t in raw] == [2, 4, 8] and [t.shape[1] for t in projected] == [4, 4, 4]
    assert all(torch.equal(a, b) for a, b in zip(raw, expected, strict=True))
    with pytest.raises(ValueError, match="projected or raw"):
        pyramid_channels(backbone, "decoder")


def test_without_projections_both_settings_read_the_same_maps():
    """Imported vox2vec / hierarchical-dense-ssl weights have no projection: raw == projected."""
    backbone = _backbone("none")
    x = torch.rand(1, 1, 16, 16, 8)
    assert pyramid_channels(backbone, "raw") == pyramid_channels(backbone, "projected")
    with torch.no_grad():
        for a, b in zip(
            backbone_pyramid(backbone, x, "raw"),
            backbone_pyramid(backbone, x, "projected"),
            strict=True,
        ):
            assert torch.equal(a, b)


def test_the_setting_travels_with_the_trained_head(tmp_path):
    backbone = _backbone("learned")
    channels = pyramid_channels(backbone, "raw")
    model = SegmentationModel(backbone, build_head("linear", channels, 2), "bce", features="raw")
    spec = SegmentationSpec(
        classes=[1, 6],
        head_kind="linear",
        head_in_channels=channels,
        head_hidden=8,
        head_blocks_per_level=1,
        loss="bce",
        threshold=0.5,
        sw_roi_size=[16, 16, 8],
        sw_overlap=0.5,
        sw_mode="constant",
        body_restricted=False,
        features="raw",
    )
    config = ModelConfig(
        preset="hierarchical",
        base_channels=2,
        num_levels=3,
        projection="learned",
        projection_channels=4,
    )
    path = save_segmentation_weights(
        tmp_path / "model.safetensors", model, spec, Plan.for_model(config)
    )
    loaded, loaded_spec, _ = load_segmentation_model(path)
    assert loaded_spec.features == "raw" and loaded.features == "raw"
    x = torch.rand(1, 1, 16, 16, 8)
    model.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x))
