"""Slice encoders for ALPNet: (N, 3, H, W) slices in [0, 1] -> (N, D, g, g) features on the ALP grid.

The three input channels are always slices z-1, z, z+1; the input mode chooses what the encoder
sees (seed 000, "Encoder"): ``repeat`` tiles slice z to RGB, ``stack`` feeds the three slices as
RGB, ``adapter`` learns a 1x1 convolution 3 -> 3 (+ InstanceNorm) over them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from voxssl.config.fewshot import EncoderConfig
from voxssl.fewshot.dinov2 import DinoV2Features, apply_lora, load_dinov2
from voxssl.fewshot.resnet import build_resnet_encoder
from voxssl.fewshot.volumetric import load_volumetric_encoder
from voxssl.transforms.intensity import IMAGENET_MEAN, IMAGENET_STD


class InputMode(nn.Module):
    """Turns the 3-slice stack into the encoder's 3-channel input."""

    mean: torch.Tensor  # buffers, (1, 3, 1, 1)
    std: torch.Tensor

    def __init__(self, mode: str, normalise_imagenet: bool) -> None:
        super().__init__()
        self.mode = mode
        self.normalise_imagenet = normalise_imagenet
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.adapter = (
            nn.Sequential(nn.Conv2d(3, 3, kernel_size=1), nn.InstanceNorm2d(3))
            if mode == "adapter"
            else None
        )

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if self.mode == "repeat":
            slices = slices[:, 1:2].expand(-1, 3, -1, -1)
        if self.normalise_imagenet:
            slices = (slices - self.mean) / self.std
        if self.adapter is not None:
            slices = self.adapter(slices)
        return slices


class TinyCNN(nn.Module):
    """A small CNN (stride 2 on the first two layers, then stride 1): the encoder of the tests and the
    CPU demo, not a research model."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = 3
        for index, width in enumerate(channels):
            stride = 2 if index < 2 else 1
            layers += [
                nn.Conv2d(previous, width, 3, stride=stride, padding=1),
                nn.GroupNorm(1, width),
                nn.GELU(),
            ]
            previous = width
        self.body = nn.Sequential(*layers)
        self.out_channels = previous

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


class SliceEncoder(nn.Module):
    """Input mode -> backbone (input resized to a multiple of ``multiple``) -> bilinear resize to the grid."""

    def __init__(self, input_mode: InputMode, backbone: nn.Module, multiple: int = 1) -> None:
        super().__init__()
        self.input_mode = input_mode
        self.backbone = backbone
        self.multiple = multiple
        self.out_channels = backbone.out_channels

    def forward(self, slices: torch.Tensor, grid: int) -> torch.Tensor:
        images = self.input_mode(slices)
        size = images.shape[-2:]
        target = [max(self.multiple, (s // self.multiple) * self.multiple) for s in size]
        if list(size) != target:
            images = F.interpolate(images, size=target, mode="bilinear", align_corners=False)
        features = self.backbone(images)
        if features.shape[-2:] != (grid, grid):
            features = F.interpolate(
                features, size=(grid, grid), mode="bilinear", align_corners=False
            )
        return features


def slice_context(config: EncoderConfig) -> int:
    """Neighbouring slices on each side the encoder sees (1: z-1, z, z+1)."""
    return config.slab_slices // 2 if config.type == "voxssl3d" else 1


def build_encoder(config: EncoderConfig) -> SliceEncoder:
    """The encoder a recipe describes; DINOv2 weights are loaded (see voxssl.fewshot.dinov2)."""
    input_mode = InputMode(config.input_mode, config.normalise_imagenet)
    if config.type == "cnn":
        return SliceEncoder(input_mode, TinyCNN(config.cnn_channels))
    if config.type == "dinov2":
        model = load_dinov2(config.size, config.weights, config.pretrained)
        if config.lora.enabled:
            model = apply_lora(model, config.lora.rank, config.lora.alpha, config.lora.dropout)
        features = DinoV2Features(model)
        return SliceEncoder(input_mode, features, multiple=features.patch_size)
    if config.type == "resnet101":
        backbone = build_resnet_encoder(
            config.weights, config.pretrained, tuple(config.resnet_layers)
        )
        return SliceEncoder(input_mode, backbone)
    if config.type == "voxssl3d":
        if config.voxssl_weights is None:
            raise ValueError("encoder.voxssl_weights is required when encoder.type is voxssl3d")
        identity = InputMode(
            "stack", normalise_imagenet=False
        )  # the cache's [0, 1] values, as pretrained
        return SliceEncoder(
            identity,
            load_volumetric_encoder(config.voxssl_weights, trainable=config.voxssl_trainable),
        )
    raise ValueError(f"unknown encoder.type {config.type!r}")


__all__ = [
    "InputMode",
    "SliceEncoder",
    "TinyCNN",
    "build_encoder",
    "slice_context",
]
