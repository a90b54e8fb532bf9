"""The SSL-ALPNet encoder: DeepLabv3's dilated ResNet (output stride 8) + 1x1 conv to 256, loaded
from a torchvision-layout checkpoint on disk, never downloaded."""

from __future__ import annotations

import pytest
import torch

from voxssl.config.fewshot import EncoderConfig, LoRAConfig
from voxssl.errors import CheckpointError
from voxssl.fewshot.encoders import build_encoder
from voxssl.fewshot.resnet import DeepLabResNetEncoder, build_resnet_encoder

TINY = (1, 1, 1, 1)


def test_output_stride_8_and_256_channels():
    torch.manual_seed(0)
    encoder = DeepLabResNetEncoder(TINY).eval()
    with torch.no_grad():
        out = encoder(torch.rand(2, 3, 64, 48))
    assert out.shape == (2, 256, 8, 6)
    # dilation, not stride, in the last two stages (torchvision's replace_stride_with_dilation)
    assert encoder.backbone.layer3[0].conv2.stride == (1, 1)
    assert encoder.backbone.layer4[0].conv2.dilation == (2, 2)
    assert encoder.backbone.layer4[0].downsample[0].stride == (1, 1)


def test_resnet101_has_torchvision_key_names_and_parameter_count():
    encoder = DeepLabResNetEncoder()
    keys = encoder.backbone.state_dict()
    assert "layer3.22.conv3.weight" in keys and "layer1.0.downsample.1.running_var" in keys
    params = sum(p.numel() for p in encoder.backbone.parameters())
    assert params == 42_500_160  # torchvision resnet101 without fc (44,549,160 - 2,049,000)


def test_weights_load_from_a_deeplab_checkpoint_and_bad_files_are_refused(tmp_path):
    source = DeepLabResNetEncoder(TINY)
    state = {f"backbone.{k}": v for k, v in source.backbone.state_dict().items()}
    state["classifier.4.weight"] = torch.zeros(21, 256, 1, 1)  # DeepLab's head: ignored
    path = tmp_path / "deeplabv3_resnet101_coco.pth"
    torch.save(state, path)
    loaded = build_resnet_encoder(path, pretrained=True, layers=TINY)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value)
    del state["backbone.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing"):
        build_resnet_encoder(path, pretrained=True, layers=TINY)
    with pytest.raises(CheckpointError, match="deeplabv3_resnet101_coco"):
        build_resnet_encoder(None, pretrained=True, layers=TINY)


def test_recipe_encoder_type_resnet101_builds_the_slice_encoder():
    config = EncoderConfig(
        type="resnet101",
        pretrained=False,
        resnet_layers=list(TINY),
        normalise_imagenet=False,
        lora=LoRAConfig(enabled=False),
    )
    encoder = build_encoder(config).eval()
    with torch.no_grad():
        assert encoder(torch.rand(1, 3, 64, 64), 8).shape == (1, 256, 8, 8)
