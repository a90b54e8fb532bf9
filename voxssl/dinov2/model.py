"""DINOv2's student and teacher: a ViT with a DINO head (and optionally a separate iBOT head).

The student sees two global crops (with iBOT masks: masked patches are replaced by the ViT's mask
token) and the local crops; the teacher, an exponential moving average of the student, sees the
unmasked global crops only and is never trained by gradient (DINOv2 ``SSLMetaArch``). Shapes:
``B`` images, global crops ``(2B, 3, G, G)`` crop-major (all first crops, then all second crops),
local crops ``(L B, 3, l, l)`` crop-major, masks ``(2B, N)`` over the N patches of a global crop.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from voxssl.config.dinov2 import Dinov2Config, ViTConfig
from voxssl.extras import require
from voxssl.fewshot.dinov2 import dinov2_config, load_dinov2
from voxssl.losses.dino_targets import EMACenter
from voxssl.models.dino_head import DINOHead

if TYPE_CHECKING:  # annotations only: transformers is an optional dependency
    from transformers import Dinov2Model


def build_backbone(cfg: ViTConfig, image_size: int) -> Dinov2Model:
    """The ViT to continue training (weights resolved as for the few-shot encoder), or a random
    initialisation of ``cfg.size`` with the overrides and position embeddings for ``image_size``."""

    if cfg.pretrained:
        return load_dinov2(cfg.size, cfg.weights, pretrained=True)
    Dinov2Model = require("transformers", "the DINOv2 encoder").Dinov2Model

    config = dinov2_config(
        cfg.size,
        image_size=image_size,
        layerscale_value=cfg.layerscale_init,
        **cfg.architecture_overrides(),
    )
    return Dinov2Model(config)


def set_drop_path(backbone: Dinov2Model, rate: float, uniform: bool) -> None:
    """Stochastic depth in every block: ``rate`` everywhere, or ``rate * i / (depth - 1)`` in block
    ``i`` (DINOv2's ``drop_path_uniform: false``). Active in training mode only."""
    Dinov2DropPath = require(
        "transformers.models.dinov2.modeling_dinov2", "the DINOv2 encoder"
    ).Dinov2DropPath

    layers = backbone.encoder.layer
    depth = len(layers)
    for index, layer in enumerate(layers):
        value = rate if uniform or depth == 1 else rate * index / (depth - 1)
        layer.drop_path = Dinov2DropPath(value) if value > 0 else nn.Identity()


@dataclass
class NetworkOutput:
    global_cls: torch.Tensor  # (2B, D) normalised CLS tokens of the global crops (KoLeo)
    global_scores: torch.Tensor  # (2B, K) DINO head
    local_scores: torch.Tensor | None  # (L B, K)
    masked_scores: (
        torch.Tensor | None
    )  # (M, K') iBOT head on the masked patches, masks.nonzero() order


class SSLNetwork(nn.Module):
    """ViT + DINO head (+ iBOT head); the iBOT scores use the DINO head unless a separate one is given."""

    def __init__(
        self, backbone: Dinov2Model, dino_head: DINOHead, ibot_head: DINOHead | None = None
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head

    def forward(
        self,
        global_crops: torch.Tensor,
        local_crops: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> NetworkOutput:
        tokens = self.backbone(pixel_values=global_crops, bool_masked_pos=masks).last_hidden_state
        global_cls = tokens[:, 0]
        masked = None
        if masks is not None:
            patches = tokens[:, tokens.shape[1] - masks.shape[1] :]  # after CLS (and registers)
            masked = patches[masks]  # (M, D)
        local_cls = None
        if local_crops is not None and local_crops.shape[0] > 0:
            local_cls = self.backbone(pixel_values=local_crops).last_hidden_state[:, 0]
        # one pass through the shared head for every token it scores
        parts = [global_cls] + ([local_cls] if local_cls is not None else [])
        if masked is not None and self.ibot_head is None:
            parts.append(masked)
        scores = self.dino_head(torch.cat(parts)) if len(parts) > 1 else self.dino_head(parts[0])
        sizes = [p.shape[0] for p in parts]
        split = list(torch.split(scores, sizes))
        global_scores = split.pop(0)
        local_scores = split.pop(0) if local_cls is not None else None
        if masked is None:
            masked_scores = None
        elif self.ibot_head is None:
            masked_scores = split.pop(0)
        else:
            masked_scores = self.ibot_head(masked)
        return NetworkOutput(global_cls, global_scores, local_scores, masked_scores)

    @torch.no_grad()
    def teacher_scores(
        self, global_crops: torch.Tensor, masks: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's view: unmasked global crops; DINO scores of the CLS tokens (2B, K) and iBOT
        scores of the patches the student has masked (M, K'), in masks.nonzero() order."""
        tokens = self.backbone(pixel_values=global_crops).last_hidden_state
        cls = tokens[:, 0]
        if masks is None:
            return self.dino_head(cls), None
        masked = tokens[:, tokens.shape[1] - masks.shape[1] :][masks]
        if self.ibot_head is not None:
            return self.dino_head(cls), self.ibot_head(masked)
        scores = self.dino_head(torch.cat([cls, masked]))
        return scores[: cls.shape[0]], scores[cls.shape[0] :]


class Dinov2Pretrainer(nn.Module):
    """Student, EMA teacher and the two centers: everything whose state a checkpoint must hold."""

    def __init__(
        self,
        student: SSLNetwork,
        dino_prototypes: int,
        ibot_prototypes: int,
        center_momentum: float,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = copy.deepcopy(student)
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.dino_center = EMACenter(dino_prototypes, center_momentum)
        self.ibot_center = EMACenter(ibot_prototypes, center_momentum)

    def train(self, mode: bool = True) -> Dinov2Pretrainer:
        super().train(mode)
        self.teacher.eval()  # the teacher never drops paths
        return self

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter."""
        teacher: list[torch.Tensor] = list(self.teacher.parameters())
        student = [p.detach() for p in self.student.parameters()]
        torch._foreach_mul_(teacher, momentum)
        torch._foreach_add_(teacher, student, alpha=1.0 - momentum)


def build_pretrainer(cfg: Dinov2Config) -> Dinov2Pretrainer:
    """Student (backbone loaded or initialised, drop path set) and teacher (a copy) from the recipe."""
    backbone = build_backbone(cfg.vit, cfg.crops.global_size)
    width = int(backbone.config.hidden_size)
    head = cfg.dino_head
    dino_head = DINOHead(
        width, head.num_prototypes, head.hidden_dim, head.bottleneck_dim, head.num_layers
    )
    ibot_head = None
    ibot_prototypes = head.num_prototypes
    if cfg.loss.ibot_separate_head:
        separate = cfg.loss.ibot_head
        ibot_head = DINOHead(
            width,
            separate.num_prototypes,
            separate.hidden_dim,
            separate.bottleneck_dim,
            separate.num_layers,
        )
        ibot_prototypes = separate.num_prototypes
    if cfg.loss.ibot_weight == 0 and backbone.embeddings.mask_token is not None:
        backbone.embeddings.mask_token.requires_grad_(False)  # unused without iBOT
    student = SSLNetwork(backbone, dino_head, ibot_head)
    model = Dinov2Pretrainer(
        student, head.num_prototypes, ibot_prototypes, cfg.loss.center_momentum
    )
    set_drop_path(model.student.backbone, cfg.vit.drop_path_rate, cfg.vit.drop_path_uniform)
    return model


__all__ = [
    "Dinov2Pretrainer",
    "NetworkOutput",
    "SSLNetwork",
    "build_backbone",
    "build_pretrainer",
    "set_drop_path",
]
