"""Backbone + segmentation head, and what a head's output channels mean under each loss kind.

Output convention (the same for training, probes, ``voxssl predict`` and exported bundles):

* ``bce``: one sigmoid channel per organ (no background channel); a voxel is the most probable
  organ where that probability is >= ``threshold``, else background;
* ``ce``: softmax over background (channel 0) and the organs; a voxel is the argmax.

A frozen backbone runs in eval mode (BatchNorm uses its running statistics, as in a linear probe)
and under ``torch.no_grad``; only the head learns. :meth:`SegmentationModel.set_backbone_trainable`
switches it (fine-tuning after ``frozen_steps``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from voxssl.models.features import backbone_pyramid, pyramid_channels


class SegmentationModel(nn.Module):
    """``features``: which pyramid the head reads, ``projected`` (the voxel embedding) or ``raw``
    (the decoder maps before projection); see :mod:`voxssl.models.features`."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        loss_kind: str = "bce",
        features: str = "projected",
    ) -> None:
        super().__init__()
        pyramid_channels(backbone, features)  # validates the name
        self.backbone = backbone
        self.head = head
        self.loss_kind = loss_kind
        self.features = features
        self.backbone_trainable = True
        self.set_backbone_trainable(False)

    def set_backbone_trainable(self, trainable: bool) -> None:
        self.backbone_trainable = trainable
        for parameter in self.backbone.parameters():
            parameter.requires_grad_(trainable)
        self.backbone.train(trainable and self.training)

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        self.backbone.train(
            mode and self.backbone_trainable
        )  # a frozen backbone stays in eval mode
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (B, C, X, Y, Z) of an image batch (B, C_in, X, Y, Z)."""
        if self.backbone_trainable:
            pyramid = backbone_pyramid(self.backbone, image, self.features)
        else:
            with torch.no_grad():
                pyramid = backbone_pyramid(self.backbone, image, self.features)
        return self.head(pyramid)

    def predict_probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities (sigmoid per organ for ``bce``; softmax with background first for ``ce``)."""
        return probabilities(self(image).float(), self.loss_kind)


def output_channels(kind: str, num_classes: int) -> int:
    """Head output channels for ``num_classes`` organs under loss ``kind``."""
    return num_classes if kind == "bce" else num_classes + 1


def probabilities(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-channel probabilities: sigmoid (bce) or softmax (ce, channel 0 = background)."""
    return torch.sigmoid(logits) if kind == "bce" else torch.softmax(logits, dim=1)


def labels_from_channels(
    channels: Iterable[tuple[int, np.ndarray]],
    kind: str,
    threshold: float,
    class_ids: Sequence[int],
) -> np.ndarray:
    """The label decision over (channel index, probability map) pairs, one channel at a time (a
    running argmax, so a caller may stream channels) -> uint8 canonical-id label map."""
    best_prob: np.ndarray | None = None
    best_channel: np.ndarray | None = None
    for index, prob in channels:
        if best_prob is None or best_channel is None:
            best_prob = prob.astype(np.float32, copy=True)
            best_channel = np.zeros(prob.shape, dtype=np.int16)
            continue
        better = prob > best_prob
        best_prob[better] = prob[better]
        best_channel[better] = index
    if best_prob is None or best_channel is None:
        raise ValueError("no probability channel to decide from")
    lut = np.array(list(class_ids) if kind == "bce" else [0, *class_ids], dtype=np.uint8)
    label = lut[best_channel]
    if kind == "bce":
        label[best_prob < threshold] = 0
    return label


def probabilities_to_label(
    probs: torch.Tensor | np.ndarray, class_ids: Sequence[int], kind: str, threshold: float = 0.5
) -> np.ndarray:
    """uint8 canonical-id label (X, Y, Z) of per-class probabilities (C, X, Y, Z)."""
    probs = probs.numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    return labels_from_channels(
        ((c, probs[c]) for c in range(probs.shape[0])), kind, threshold, class_ids
    )


__all__ = [
    "SegmentationModel",
    "labels_from_channels",
    "output_channels",
    "probabilities",
    "probabilities_to_label",
]
