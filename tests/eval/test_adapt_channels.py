"""``probe.adapt_channels``: single-channel weights on multi-channel scans are adapted or refused."""

import pytest
import torch

from voxssl.config.data import PreprocessConfig
from voxssl.config.model import ModelConfig
from voxssl.errors import VoxsslError
from voxssl.hub.resolve import resolve_weights
from voxssl.models.build import build_backbone
from voxssl.models.plan import Plan, preprocessing_plan
from voxssl.models.weights import load_backbone, read_plan, save_weights


@pytest.fixture()
def ct_weights(tmp_path):
    config = ModelConfig(
        preset="hierarchical", base_channels=4, num_levels=2, projection_channels=4
    )
    backbone = build_backbone(config)
    plan = Plan.for_model(
        backbone.config if hasattr(backbone, "config") else config,
        preprocessing_plan("ct", PreprocessConfig()),
    )
    path = tmp_path / "ct.safetensors"
    save_weights(path, {f"backbone.{k}": v for k, v in backbone.state_dict().items()}, plan)
    return path


def test_refuse_names_the_option(ct_weights):
    with pytest.raises(VoxsslError, match="adapt"):
        resolve_weights(str(ct_weights), in_channels=4, adapt_channels="refuse")


def test_repeat_builds_a_four_channel_backbone(ct_weights):
    adapted = resolve_weights(str(ct_weights), in_channels=4, adapt_channels="repeat")
    assert read_plan(adapted).architecture["in_channels"] == 4
    backbone, _ = load_backbone(adapted)
    original, _ = load_backbone(ct_weights)
    assert backbone.first_conv.weight.shape[1] == 4
    # the documented rule: an image whose four channels are equal gives the pretrained features
    image = torch.randn(1, 1, 8, 8, 4, generator=torch.Generator().manual_seed(0))
    backbone.eval(), original.eval()
    with torch.no_grad():
        for adapted_level, level in zip(
            backbone(image.repeat(1, 4, 1, 1, 1)), original(image), strict=True
        ):
            torch.testing.assert_close(adapted_level, level, rtol=1e-4, atol=1e-5)
