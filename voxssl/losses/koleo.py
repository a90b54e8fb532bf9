"""KoLeo regulariser (Sablayrolles et al., 2019; DINOv2 section 3): spread the features of a batch
uniformly by penalising the log-distance of each one to its nearest neighbour.

For the ``N`` features ``x_i`` of one crop of ``N`` images, L2-normalised::

    d_i = || x_i - x_nn(i) + eps ||_2      nn(i) = argmax_{j != i} <x_i, x_j>   (the nearest one)
    L   = - 1/N sum_i log(d_i + eps)

(``eps`` = 1e-8 inside the norm as :func:`torch.nn.functional.pairwise_distance` adds it, and
before the log.) DINOv2 applies it to the student's CLS tokens of each global crop separately,
never across two crops of the same image. Computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class KoLeoLoss(nn.Module):
    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``features``: (N, D), N >= 2. Returns a scalar."""
        if features.ndim != 2 or features.shape[0] < 2:
            raise ValueError(
                f"KoLeo needs (N, D) features with N >= 2, got {tuple(features.shape)}"
            )
        with torch.autocast(device_type=features.device.type, enabled=False):
            x = F.normalize(features.float(), p=2, dim=-1, eps=self.eps)
            with torch.no_grad():
                similarity = x @ x.t()
                similarity.fill_diagonal_(-2.0)  # below any cosine: never one's own neighbour
                nearest = similarity.argmax(dim=1)
            distances = F.pairwise_distance(x, x[nearest], p=2, eps=self.eps)
            return -torch.log(distances + self.eps).mean()


__all__ = ["KoLeoLoss"]
