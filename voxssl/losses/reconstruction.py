"""Reconstruction loss of the hybrid objective (seed 004 eq. 2): MSE against the CLEAN crop.

``L_MSE = sum_v m_v * ||x_hat_v - x_v||^2 / (C * sum_v m_v)``: the mean squared error over the
voxels selected by the optional mask ``m`` (all voxels without one) and all channels, where
``x_hat`` is the reconstruction head's output for the augmented view and ``x`` the un-augmented
crop. Shapes: prediction and target ``(B, C, *S)``; mask ``(B, 1, *S)``, ``(B, C, *S)`` or
``(B, *S)``, bool or {0, 1}.
"""

from __future__ import annotations

import torch
from torch import nn


class ReconstructionLoss(nn.Module):
    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ"
            )
        squared = (prediction - target.to(prediction.dtype)) ** 2  # (B, C, *S)
        if mask is None:
            return squared.mean()
        if mask.ndim == prediction.ndim - 1:
            mask = mask.unsqueeze(1)  # (B, *S) -> (B, 1, *S)
        if (
            mask.ndim != prediction.ndim
            or mask.shape[0] != prediction.shape[0]
            or mask.shape[2:] != prediction.shape[2:]
        ):
            raise ValueError(
                f"mask {tuple(mask.shape)} does not match prediction {tuple(prediction.shape)}"
            )
        weights = mask.to(squared.dtype).expand_as(squared)
        # An empty mask gives 0 (with a graph), not NaN.
        return (squared * weights).sum() / weights.sum().clamp_min(1.0)


__all__ = ["ReconstructionLoss"]
