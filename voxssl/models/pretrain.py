"""The pretraining model: backbone + projector (+ reconstruction head) in one ``nn.Module``.

One module, so that a single DDP wrapper and a single optimiser cover everything; its state dict
keys are ``backbone.*``, ``projector.*`` and ``reconstruction_head.*``. Export the backbone alone
with ``model.backbone.state_dict()`` (or let :func:`voxssl.models.weights.load_backbone` strip the
``backbone.`` prefix).
"""

from __future__ import annotations

from collections.abc import Sequence
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

    def forward(
        self,
        images: torch.Tensor | Sequence[torch.Tensor],
        coords: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
    ) -> PretrainOutput | list[PretrainOutput]:
        """One view: images ``(B, C, *S)``, coords ``(N, 1 + dims)`` = (batch index, x, y, z)
        voxels (or None) -> one :class:`PretrainOutput`.

        Several views of one shape: a list of image batches and a list of coords (one entry per
        view, None for a view without voxels) -> a list of outputs, equal up to float rounding
        to one call per view: the views run as one batch through the backbone with batch-norm
        statistics kept per view (:mod:`voxssl.models.blocks`), and the projector runs per view.
        """
        if isinstance(images, torch.Tensor):
            if coords is not None and not isinstance(coords, torch.Tensor):
                raise TypeError("one view (an image tensor) takes one coords tensor or None")
            return self._forward_views([images], [coords])[0]
        images = list(images)
        coords = [None] * len(images) if coords is None else list(coords)
        if len(coords) != len(images):
            raise ValueError(f"{len(images)} views but {len(coords)} coordinate sets")
        return self._forward_views(images, coords)

    def _forward_views(
        self, images: list[torch.Tensor], coords: list[torch.Tensor | None]
    ) -> list[PretrainOutput]:
        views = len(images)
        if views == 0:
            raise ValueError("no view to forward")
        if len({tuple(image.shape) for image in images}) > 1:
            raise ValueError(
                f"views forwarded together must have one shape, got {[tuple(i.shape) for i in images]}"
            )
        batch = images[0].shape[0]
        stacked = images[0] if views == 1 else torch.cat(images)
        features = self.backbone.forward_features(stacked, views)
        pyramid = self.backbone.project(features)
        reconstruction = None
        if self.reconstruction_head is not None:
            reconstruction = self.reconstruction_head(features[0], views)
        outputs = []
        for i, view_coords in enumerate(coords):
            part = slice(i * batch, (i + 1) * batch)
            embeddings = projections = None
            if view_coords is not None:
                if i:  # the view's samples sit at i * batch.. in the stacked batch
                    view_coords = view_coords.clone()
                    view_coords[:, 0] += i * batch
                embeddings = gather_voxel_embeddings(pyramid, view_coords, validate=False)
                projections = self.projector(embeddings)
            outputs.append(
                PretrainOutput(
                    [level[part] for level in pyramid] if views > 1 else pyramid,
                    embeddings,
                    projections,
                    None
                    if reconstruction is None
                    else reconstruction[part]
                    if views > 1
                    else reconstruction,
                )
            )
        return outputs


__all__ = ["PretrainModel", "PretrainOutput"]
