"""The supervised segmentation loss of the downstream protocols.

Shapes: B batch, C head output channels, K = number of recipe classes, spatial (X, Y, Z).

* ``bce`` (vox2vec): C = K sigmoid channels, one per organ (no background channel). Loss =
  mean over counted voxels and channels of BCE(logit, [target == k]) + ``dice_weight`` * soft Dice.
* ``ce``: C = K + 1 softmax channels, channel 0 background. Loss = CE + ``dice_weight`` * soft
  Dice over the organ channels.

A voxel counts when it is annotated (target != IGNORE_INDEX) and, with ``body_restricted_loss``,
inside the body mask (``voxel_mask``). A channel counts for a sample when its organ is annotated in
that case (``channel_mask``; partial labels). Soft Dice is MONAI's DiceLoss on masked inputs,
pooled over the batch (``batch=True``) so that patches without an organ do not produce 0/0 noise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import nn

from voxssl.vocabulary import IGNORE_INDEX


class SegmentationLoss(nn.Module):
    def __init__(self, kind: str = "bce", dice_weight: float = 1.0) -> None:
        super().__init__()
        if kind not in ("bce", "ce"):
            raise ValueError(f"loss must be 'bce' or 'ce', got {kind!r}")
        if dice_weight < 0:
            raise ValueError("dice_weight must be >= 0")
        self.kind = kind
        self.dice_weight = dice_weight
        self.dice = DiceLoss(
            include_background=True, sigmoid=False, softmax=False, batch=True, reduction="none"
        )

    def forward(
        self,
        logits: torch.Tensor,  # (B, C, X, Y, Z)
        target: torch.Tensor,  # (B, X, Y, Z) long: 0 background, k + 1 = recipe class k, 255 ignore
        voxel_mask: torch.Tensor,  # (B, X, Y, Z) bool: voxels the loss may count
        channel_mask: torch.Tensor,  # (B, K) bool: organ k annotated in sample b
    ) -> torch.Tensor:
        num_organs = channel_mask.shape[1]
        counted = voxel_mask & (target != IGNORE_INDEX)
        organ_onehot = torch.stack(
            [target == k + 1 for k in range(num_organs)], dim=1
        ).float()  # (B, K, ...)
        weight = (counted[:, None] & channel_mask[:, :, None, None, None]).float()  # (B, K, ...)
        if self.kind == "bce":
            bce = F.binary_cross_entropy_with_logits(logits.float(), organ_onehot, reduction="none")
            data_term = (bce * weight).sum() / weight.sum().clamp_min(1.0)
            organ_prob = torch.sigmoid(logits.float())
        else:
            ce_target = torch.where(counted, target, torch.full_like(target, IGNORE_INDEX))
            # a partially annotated case: its background may hide an unannotated organ; do not train it
            partial = ~channel_mask.all(dim=1)
            ce_target = torch.where(
                partial[:, None, None, None] & (ce_target == 0), IGNORE_INDEX, ce_target
            )
            if (ce_target != IGNORE_INDEX).any():
                data_term = F.cross_entropy(logits.float(), ce_target, ignore_index=IGNORE_INDEX)
            else:
                data_term = logits.sum() * 0.0
            organ_prob = torch.softmax(logits.float(), dim=1)[:, 1:]
        if self.dice_weight == 0:
            return data_term
        dice = self.dice(
            organ_prob * weight, organ_onehot * weight
        )  # (1, K, 1, 1, 1) with batch=True
        return data_term + self.dice_weight * dice.mean()


__all__ = ["SegmentationLoss"]
