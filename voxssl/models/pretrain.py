"""The pretraining model: backbone + projector (+ reconstruction head) in one ``nn.Module``.

One module, so that a single DDP wrapper and a single optimiser cover everything; its state dict
keys are ``backbone.*``, ``projector.*`` and ``reconstruction_head.*``. Export the backbone alone
with ``model.backbone.state_dict()`` (or let :func:`voxssl.models.weights.load_backbone` strip the
``backbone.`` prefix).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from voxssl.models.fpn import FPN
from voxssl.models.gather import gather_voxel_embeddings
from voxssl.models.pretrain_heads import ProjectionHead, ReconstructionHead


class PretrainOutput(NamedTuple):
    pyramid: list[torch.Tensor]  # voxel-embedding pyramid [(B, level_channels[i], *S_i)]
    embeddings: (
        torch.Tensor | None
    )  # (N, D) concatenated embeddings at coords (None without coords)
    projections: torch.Tensor | None  # (N, projector_out), L2-normalised
    reconstruction: torch.Tensor | None  # (B, reconstruction_channels, *S) or None without a head


class PretrainModel(nn.Module):
    def __init__(
        self,
        backbone: FPN,
        projector: ProjectionHead,
        reconstruction_head: ReconstructionHead | None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.reconstruction_head = reconstruction_head

    def forward(self, images: torch.Tensor, coords: torch.Tensor | None = None) -> PretrainOutput:
        """Args: images ``(B, C, *S)``; coords ``(N, 1 + dims)`` = (batch index, x, y, z) voxels."""
        features = self.backbone.forward_features(images)
        pyramid = self.backbone.project(features)
        embeddings = projections = None
        if coords is not None:
            embeddings = gather_voxel_embeddings(pyramid, coords, validate=False)
            projections = self.projector(embeddings)
        reconstruction = None
        if self.reconstruction_head is not None:
            reconstruction = self.reconstruction_head(features[0])
        return PretrainOutput(pyramid, embeddings, projections, reconstruction)


__all__ = ["PretrainModel", "PretrainOutput"]
