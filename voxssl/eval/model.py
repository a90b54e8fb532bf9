"""Backbone + segmentation head, with the backbone frozen or trainable.

A frozen backbone runs in eval mode (BatchNorm uses its running statistics, as in a linear probe)
and under ``torch.no_grad``; only the head learns. :meth:`SegmentationModel.set_backbone_trainable`
switches it (fine-tuning after ``frozen_steps``).
"""

from __future__ import annotations

import torch
from torch import nn


class SegmentationModel(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Module, loss_kind: str = "bce") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.loss_kind = loss_kind
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
            pyramid = self.backbone(image)
        else:
            with torch.no_grad():
                pyramid = self.backbone(image)
        return self.head(pyramid)

    def predict_probabilities(self, image: torch.Tensor) -> torch.Tensor:
        """Probabilities (sigmoid per organ for ``bce``; softmax with background first for ``ce``)."""
        from voxssl.losses.segmentation import probabilities

        return probabilities(self(image).float(), self.loss_kind)


__all__ = ["SegmentationModel"]
