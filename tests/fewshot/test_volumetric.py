"""voxssl's 3D FPN as a frozen few-shot encoder: voxel embeddings of the middle slice, no training."""

from __future__ import annotations

import dataclasses
import json

import torch

from voxssl.config.fewshot import EncoderConfig
from voxssl.fewshot.encoders import build_encoder
from voxssl.fewshot.volumetric import middle_slice_embeddings


def _tiny_backbone_file(path):
    from voxssl.config.model import ModelConfig
    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan
    from voxssl.models.weights import save_weights

    config = ModelConfig(
        preset="hierarchical",
        base_channels=4,
        num_levels=2,
        blocks_per_stage=1,
        projection_channels=4,
    )
    torch.manual_seed(0)
    backbone = build_backbone(config)
    save_weights(
        path, backbone.state_dict(), Plan.for_model(config, {"modality": "ct", "in_channels": 1})
    )
    return path


def test_middle_slice_embeddings_index_the_containing_cell():
    level0 = torch.arange(2 * 4 * 4 * 3, dtype=torch.float32).reshape(1, 2, 4, 4, 3)
    level1 = torch.randn(1, 3, 2, 2, 2)
    out = middle_slice_embeddings([level0, level1], middle=1, height=4, width=4)
    assert out.shape == (1, 5, 4, 4)
    assert torch.equal(out[:, :2], level0[..., 1])
    assert torch.equal(
        out[0, 2:, 3, 1], level1[0, :, 1, 0, 0]
    )  # (3, 1) // 2 = (1, 0); z 1 // 2 = 0


def test_frozen_3d_encoder_and_training_free_eval(phantom_cache, tmp_path):
    from voxssl.fewshot.evaluate import evaluate_protocol

    weights = _tiny_backbone_file(tmp_path / "backbone.safetensors")
    encoder = build_encoder(EncoderConfig(type="voxssl3d", voxssl_weights=weights, slab_slices=5))
    features = encoder(torch.rand(2, 5, 32, 32), grid=16)
    assert features.shape == (2, encoder.out_channels, 16, 16) and encoder.out_channels == 8
    assert not any(p.requires_grad for p in encoder.parameters())

    base = phantom_cache["recipe"].fewshot
    config = dataclasses.replace(
        base,
        encoder=EncoderConfig(type="voxssl3d", voxssl_weights=weights, slab_slices=3),
        eval_image_size=32,
        eval=dataclasses.replace(base.eval, write_predictions=False),
    )
    results = evaluate_protocol(
        phantom_cache["cache_dir"], config, None, tmp_path / "eval", groups=[1], folds=[0]
    )
    stored = json.loads((tmp_path / "eval" / "results.json").read_text(encoding="utf-8"))
    assert len(results.scans) == 4 and stored["dice_per_organ"].keys() == {"spleen", "liver"}
    assert all(0.0 <= s.dice <= 1.0 for s in results.scans)
