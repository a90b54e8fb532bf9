"""The pretraining objective for one batch of view pairs:

    L = w_nce * InfoNCE(view 1, view 2) + w_rec * MSE(reconstructions, clean crops)
        + w_eq * Equivariance(f(view 1), f(view 3 = T(crop 1, re-augmented)))

The equivariance term contrasts ``f(T(x))`` at ``p`` against ``f(x)`` at ``T^-1(p)``, after the
InfoNCE projector (``equivariance.projector: shared``, as Pix2Rep) or on the raw embeddings
(``none``); see :class:`voxssl.losses.equivariance.EquivarianceLoss`.

Shapes: P pairs, N positives per pair (padded, ``valid`` marks real ones), M = number of valid
positives in the batch, D = projector output width.

The views of one shape go through the model together, as one batch of 2P (or 3P) crops with
batch-norm statistics per view (:meth:`voxssl.models.pretrain.PretrainModel.forward`): the
same losses and gradients as one forward pass per view, up to float rounding, with larger and
faster convolutions (tests/train/test_fast_step.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from voxssl.config.pretrain import PretrainConfig
from voxssl.losses.equivariance import EquivarianceLoss
from voxssl.losses.infonce import InfoNCELoss, at_least_float32
from voxssl.losses.reconstruction import ReconstructionLoss


def batch_coords(positions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(P, N, 3) positions + (P, N) valid -> (M, 4) ``(pair index, x, y, z)`` of the valid ones."""
    pair_index = torch.arange(positions.shape[0], device=positions.device)[:, None].expand(
        valid.shape
    )
    return torch.cat([pair_index[valid][:, None], positions[valid]], dim=1)


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, weighted total
    terms: dict[str, torch.Tensor]  # unweighted terms (detached), for logging
    view1_output: object  # the model output of view 1 (pyramid, reconstruction) for images


class PretrainObjective(nn.Module):
    """Runs the model on the views of a batch and combines the loss terms.

    With ``gather_negatives_across_ranks`` the contrastive terms use the projections of every
    rank as negatives (gradient-correct all-gather), so each positive is contrasted against the
    whole global batch.
    """

    def __init__(self, cfg: PretrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gather = cfg.gather_negatives_across_ranks
        self.infonce = InfoNCELoss(temperature=cfg.infonce_temperature, gather_distributed=gather)
        self.reconstruction = ReconstructionLoss()
        self.equivariance = EquivarianceLoss(
            temperature=cfg.equivariance.temperature, gather_distributed=gather
        )

    def forward(self, model: nn.Module, batch: dict) -> StepOutput:
        cfg = self.cfg
        valid = batch["valid"]
        images = [batch["view1"], batch["view2"]]
        coords: list[torch.Tensor | None] = [
            batch_coords(batch["positions1"], valid),
            batch_coords(batch["positions2"], valid),
        ]
        equivariance = cfg.equivariance.enabled
        # view 3 joins the batch when T kept the crop's shape (a zoom may not)
        with_view3 = equivariance and batch["view3"].shape == batch["view1"].shape
        if with_view3:
            images.append(batch["view3"])
            coords.append(None)
        outputs = model(images, coords)  # projections (M, D) for views 1 and 2
        out1, out2 = outputs[0], outputs[1]
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=batch["view1"].device)
        if cfg.infonce_weight > 0:
            terms["infonce"] = self.infonce(
                at_least_float32(out1.projections), at_least_float32(out2.projections)
            )
            total = total + cfg.infonce_weight * terms["infonce"]
        if cfg.reconstruction_weight > 0:
            if out1.reconstruction is None:
                raise ValueError(
                    "pretrain.reconstruction_weight > 0 needs a model with a reconstruction head"
                )
            terms["reconstruction"] = 0.5 * (
                self.reconstruction(at_least_float32(out1.reconstruction), batch["target1"])
                + self.reconstruction(at_least_float32(out2.reconstruction), batch["target2"])
            )
            total = total + cfg.reconstruction_weight * terms["reconstruction"]
        if equivariance:
            # the pyramid of T(crop 1 with fresh augmentations)
            out3 = outputs[2] if with_view3 else model(batch["view3"])
            positions3 = batch_coords(
                batch["positions3"], valid & batch["valid3"]
            )  # on T's output grid
            pyramid3 = [at_least_float32(level) for level in out3.pyramid]
            pyramid1 = [at_least_float32(level) for level in out1.pyramid]
            projector = unwrap(model).projector if cfg.equivariance.projector == "shared" else None
            terms["equivariance"] = self.equivariance(
                pyramid3, pyramid1, list(batch["transforms"]), positions3, projector=projector
            )
            total = total + cfg.equivariance.weight * terms["equivariance"]
        return StepOutput(total, {k: v.detach() for k, v in terms.items()}, out1)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a torch.compile and/or DistributedDataParallel wrapper (the model itself
    otherwise)."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


__all__ = ["PretrainObjective", "StepOutput", "batch_coords"]
