"""The SSL-ALPNet encoder (Ouyang et al., ECCV 2020): the ResNet-101 of DeepLabv3 (output stride 8:
layers 3 and 4 dilated instead of strided) followed by a 1x1 convolution 2048 -> 256 without bias,
no ASPP (the published ``TVDeeplabRes101Encoder``, ``use_aspp=False``). A 256 x 256 slice gives a
32 x 32 grid of 256-d features.

Written in plain PyTorch (torchvision does not import beside voxssl's torch); parameter names follow
torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0`` ...), so the
checkpoint the authors started from loads unchanged: torchvision's
``deeplabv3_resnet101_coco-586e9e4e.pth`` (``DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1``,
https://download.pytorch.org/models/deeplabv3_resnet101_coco-586e9e4e.pth), whose ``backbone.*``
tensors are this ResNet. Weights are read from a local file only (``encoder.weights``), with
``torch.load(weights_only=True)`` or safetensors; the 1x1 reduction starts from PyTorch's default
initialisation, as in the published code.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from voxssl.errors import CheckpointError

#: ResNet-101: bottleneck blocks per stage
RESNET101_LAYERS = (3, 4, 23, 3)
#: torchvision's file name for the COCO-trained DeepLabv3-ResNet101 the SSL-ALPNet code starts from
COCO_CHECKPOINT = "deeplabv3_resnet101_coco-586e9e4e.pth"


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1, 3x3 (stride and dilation here), 1x1 x4, identity or projection."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        dilation: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width,
            width,
            kernel_size=3,
            stride=stride,
            padding=dilation,
            dilation=dilation,
            bias=False,
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class DilatedResNet(nn.Module):
    """ResNet whose later stages trade stride for dilation (``dilate`` per stage 2, 3, 4)."""

    def __init__(
        self,
        layers: tuple[int, ...] = RESNET101_LAYERS,
        dilate: tuple[bool, bool, bool] = (False, True, True),
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(256, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(512, layers[3], stride=2, dilate=dilate[2])
        self.out_channels = 512 * Bottleneck.expansion
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(
        self, planes: int, blocks: int, stride: int = 1, dilate: bool = False
    ) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(
                    self.inplanes,
                    planes * Bottleneck.expansion,
                    kernel_size=1,
                    stride=stride,
                    bias=False,
                ),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        modules = [Bottleneck(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        modules += [
            Bottleneck(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)
        ]
        return nn.Sequential(*modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class DeepLabResNetEncoder(nn.Module):
    """(N, 3, H, W) -> (N, 256, ceil(H / 8), ceil(W / 8)): dilated ResNet + 1x1 conv 2048 -> 256."""

    def __init__(self, layers: tuple[int, ...] = RESNET101_LAYERS, out_channels: int = 256) -> None:
        super().__init__()
        self.backbone = DilatedResNet(layers)
        self.localconv = nn.Conv2d(
            self.backbone.out_channels, out_channels, kernel_size=1, bias=False
        )
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.localconv(self.backbone(images))


def read_resnet_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ResNet tensors of a checkpoint: torchvision DeepLabv3 (``backbone.*``), a plain torchvision
    ResNet (``conv1.*``, ``fc.*`` ...) or a safetensors file of either; never unpickles code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ResNet checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch / safetensors raise their own error types
        raise CheckpointError(f"{path}: not a readable weights file ({err})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith(("fc.", "classifier."))}


def load_resnet_weights(encoder: DeepLabResNetEncoder, path: str | os.PathLike) -> None:
    """Fill ``encoder.backbone`` from ``path``; every ResNet tensor must be there with its shape."""
    state = read_resnet_state(path)
    expected = encoder.backbone.state_dict()
    missing = [k for k in expected if k not in state]
    unknown = [k for k in state if k not in expected]
    if missing or unknown:
        raise CheckpointError(
            f"{path}: not a ResNet-101 checkpoint ({len(missing)} tensors missing, e.g. "
            f"{missing[:2]}; {len(unknown)} unknown, e.g. {unknown[:2]})"
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: '{key}' has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
    encoder.backbone.load_state_dict(state, strict=True)


def build_resnet_encoder(
    weights: str | os.PathLike | None, pretrained: bool, layers: tuple[int, ...] = RESNET101_LAYERS
) -> DeepLabResNetEncoder:
    encoder = DeepLabResNetEncoder(layers)
    if pretrained:
        if weights is None:
            raise CheckpointError(
                "fewshot.encoder.weights: the SSL-ALPNet encoder starts from torchvision's "
                f"{COCO_CHECKPOINT} (download it once and give its path), or set "
                "fewshot.encoder.pretrained: false to start from random weights"
            )
        load_resnet_weights(encoder, weights)
    return encoder


__all__ = [
    "COCO_CHECKPOINT",
    "RESNET101_LAYERS",
    "Bottleneck",
    "DeepLabResNetEncoder",
    "DilatedResNet",
    "build_resnet_encoder",
    "load_resnet_weights",
    "read_resnet_state",
]
