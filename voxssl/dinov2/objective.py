"""One DINOv2 training objective from one batch (DINOv2 ``SSLMetaArch.forward_backward``)::

    loss = w_dino (L_dino_local + L_dino_global) + w_koleo (KoLeo(crop 1) + KoLeo(crop 2)) + w_ibot L_ibot

1. the teacher scores the unmasked global crops (CLS tokens through the DINO head; the patches the
   student will see masked through the iBOT head) and turns them into targets: centering +
   sharpening (then the centers move) or Sinkhorn-Knopp, at this step's teacher temperature;
2. the student scores the masked global crops and the local crops;
3. DINO compares every student crop with every other teacher crop, iBOT the masked patches,
   KoLeo spreads the student's CLS tokens of each global crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from voxssl.config.dinov2 import LossConfig
from voxssl.dinov2.model import Dinov2Pretrainer
from voxssl.distributed import DistributedContext
from voxssl.losses.dino_clstoken import DINOClsTokenLoss
from voxssl.losses.dino_targets import EMACenter, sinkhorn_knopp
from voxssl.losses.ibot_patch import IBOTPatchLoss
from voxssl.losses.koleo import KoLeoLoss

NUM_GLOBAL_CROPS = 2


@dataclass
class ObjectiveOutput:
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]  # unweighted, detached: dino_local, dino_global, koleo, ibot
    masked_patches: int


class Dinov2Objective:
    def __init__(self, cfg: LossConfig, ctx: DistributedContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.dino = DINOClsTokenLoss(cfg.student_temperature)
        self.ibot = IBOTPatchLoss(cfg.student_temperature)
        self.koleo = KoLeoLoss()

    def targets(self, scores: torch.Tensor, center: EMACenter, temperature: float) -> torch.Tensor:
        if self.cfg.targets == "centering":
            probabilities = center.softmax(scores, temperature)
            center.update(scores, self.ctx)
            return probabilities
        return sinkhorn_knopp(scores, temperature, self.cfg.sinkhorn_iterations, self.ctx)

    def __call__(
        self,
        model: Dinov2Pretrainer,
        student: nn.Module,
        batch: dict,
        teacher_temperature: float,
    ) -> ObjectiveOutput:
        """``student``: ``model.student`` or its DDP wrapper (called once, for DDP's sake)."""
        cfg = self.cfg
        global_crops, local_crops = batch["global_crops"], batch["local_crops"]
        masks = batch["masks"] if cfg.ibot_weight > 0 else None
        images = global_crops.shape[0] // NUM_GLOBAL_CROPS
        with torch.no_grad():
            teacher_global, teacher_masked = model.teacher.teacher_scores(global_crops, masks)
            dino_targets = self.targets(teacher_global, model.dino_center, teacher_temperature)
            ibot_targets = (
                None
                if teacher_masked is None
                else self.targets(teacher_masked, model.ibot_center, teacher_temperature)
            )
        out = student(global_crops, local_crops, masks)
        prototypes = out.global_scores.shape[-1]
        dino_local, dino_global = self.dino(
            out.global_scores.view(NUM_GLOBAL_CROPS, images, prototypes),
            None if out.local_scores is None else out.local_scores.view(-1, images, prototypes),
            dino_targets.view(NUM_GLOBAL_CROPS, images, prototypes),
        )
        loss = cfg.dino_weight * (dino_local + dino_global)
        terms = {"dino_local": dino_local, "dino_global": dino_global}
        if cfg.koleo_weight > 0:
            koleo = sum(self.koleo(cls) for cls in out.global_cls.chunk(NUM_GLOBAL_CROPS))
            loss = loss + cfg.koleo_weight * koleo
            terms["koleo"] = koleo
        if masks is not None:
            ibot = self.ibot(out.masked_scores, ibot_targets, masks)
            loss = loss + cfg.ibot_weight * ibot
            terms["ibot"] = ibot
        return ObjectiveOutput(
            loss=loss,
            terms={k: v.detach().float() for k, v in terms.items()},
            masked_patches=0 if masks is None else int(masks.sum()),
        )


__all__ = ["NUM_GLOBAL_CROPS", "Dinov2Objective", "ObjectiveOutput"]
