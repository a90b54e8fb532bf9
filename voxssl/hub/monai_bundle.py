"""The classes an exported MONAI bundle runs: :class:`BundleNetwork` (the voxssl backbone, plus the
segmentation head when the weights have one) and :class:`BundleInference` (the bundle's ``run``).

They depend only on the models, so bundles keep working whatever else moves; the bundle itself
(its transforms, ``configs/inference.json``, metadata and card) is written by
:func:`voxssl.eval.monai_bundle.export_monai_bundle`, beside ``voxssl predict`` whose results it
reproduces.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxssl.config.model import model_config_from_dict
from voxssl.models.build import build_backbone
from voxssl.models.features import backbone_pyramid
from voxssl.models.segmentation import probabilities
from voxssl.models.segmentation_heads import upsample_to
from voxssl.models.segmentation_weights import SEGMENTATION_KEY, SegmentationSpec


class BundleNetwork(nn.Module):
    """Backbone (+ segmentation head) rebuilt from plain config data, for MONAI bundles.

    Args:
        architecture: the plan's architecture (``model`` recipe fields).
        segmentation: the plan's ``extra.segmentation`` spec, or None for an embedding network.

    ``forward`` returns head logits ``(B, K, X, Y, Z)`` (probabilities with ``probabilities=True``:
    sigmoid per organ for ``bce``, softmax with background first for ``ce``), or the voxel
    embedding ``(B, D, X, Y, Z)`` (every level read at ``v // 2**i`` and concatenated).
    """

    def __init__(
        self,
        architecture: Mapping[str, Any],
        segmentation: Mapping[str, Any] | None = None,
        probabilities: bool = False,
    ) -> None:
        super().__init__()
        self.probabilities = probabilities and segmentation is not None
        self.loss_kind = (segmentation or {}).get("loss", "bce")

        self.backbone = build_backbone(
            model_config_from_dict(dict(architecture), source="bundle network")
        )
        self.head: nn.Module | None = None
        self.features = "projected"
        if segmentation is not None:
            spec = SegmentationSpec.from_plan_extra(
                {SEGMENTATION_KEY: dict(segmentation)}, "bundle network"
            )
            self.head = spec.build_head()
            self.features = spec.features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pyramid = backbone_pyramid(self.backbone, image, self.features)
        if self.head is not None:
            logits = self.head(pyramid)
            if self.probabilities:  # per window, as voxssl predict blends them
                return probabilities(logits.float(), self.loss_kind)
            return logits

        size = image.shape[2:]
        return torch.cat([upsample_to(level, i, size) for i, level in enumerate(pyramid)], dim=1)


class BundleInference:
    """The bundle's ``run``: load ``models/model.pt`` (tensors only, strict), then for every item
    of ``dataloader`` (any iterable of preprocessed dictionaries, one scan each) sliding-window
    inference and the postprocessing chain (which writes the NIfTI files).

    A plain loop instead of an ignite ``SupervisedEvaluator``, so running the bundle needs no
    pytorch-ignite; MONAI's ``python -m monai.bundle`` itself needs ``fire``.
    """

    def __init__(
        self,
        dataloader,
        network: nn.Module,
        inferer,
        postprocessing,
        weights: str | os.PathLike,
        device: str | torch.device = "cpu",
    ) -> None:
        self.dataloader, self.network, self.inferer = dataloader, network, inferer
        self.postprocessing, self.weights, self.device = (
            postprocessing,
            Path(weights),
            torch.device(device),
        )

    def load_weights(self) -> None:
        state = torch.load(self.weights, map_location=self.device, weights_only=True)
        self.network.load_state_dict(state, strict=True)

    def run(self) -> int:
        """Predict every scan; returns how many were written."""
        self.load_weights()
        self.network.to(self.device).eval()
        count = 0
        with torch.no_grad():
            for item in self.dataloader:
                image = torch.as_tensor(item["image"])[None].to(self.device)
                item = dict(item)
                item["pred"] = self.inferer(image, self.network)[0].cpu()
                self.postprocessing(item)
                count += 1
        return count


__all__ = ["BundleInference", "BundleNetwork"]
