"""Teacher targets of DINO / iBOT: centering + sharpening, or Sinkhorn-Knopp (Oquab et al., 2023).

The teacher's prototype scores ``t`` (N, K) become target distributions over the K prototypes in
one of two ways, both without gradient:

**Centering** (DINO): subtract an exponential moving average ``c`` (1, K) of the teacher's scores
and sharpen with a low temperature ``tau_t``::

    p = softmax((t - c) / tau_t)            row-wise
    c <- m c + (1 - m) mean_n t_n            after use (m: center momentum, 0.9)

The mean runs over the rows of every rank (each rank contributes the mean of its own rows, and the
ranks' means are averaged, as the authors' code does). Centering stops one prototype from
dominating; sharpening stops the uniform collapse.

**Sinkhorn-Knopp** (SwAV; DINOv2's ViT-L/g recipes and MediDino): the targets are the
entropy-regularised optimal transport plan that spreads the N samples (all ranks: ``B`` in total)
evenly over the K prototypes. With ``Q = exp(t / tau_t)^T`` (K, B) normalised to sum 1, repeat
``iterations`` times: divide each row by its sum (over all ranks) and by K, then each column by its
sum and by B; the result times B has columns summing to 1 (one distribution per sample). Scaling
``t`` by a constant before ``exp`` cancels in the first normalisation, so the global maximum is
subtracted first (numerically safe; the same plan).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxssl.distributed import DistributedContext, all_reduce, all_reduce_mean

_LOCAL = DistributedContext()


class EMACenter(nn.Module):
    """The moving center ``c`` (a buffer, saved with the model so that resuming is exact).

    Args:
        dim: K, the number of prototypes.
        momentum: m in ``c <- m c + (1 - m) batch_mean`` (DINOv2: 0.9).
    """

    center: torch.Tensor

    def __init__(self, dim: int, momentum: float = 0.9) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"center momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def softmax(self, teacher_scores: torch.Tensor, temperature: float) -> torch.Tensor:
        """``softmax((t - c) / tau_t)`` over the last axis; (N, K) -> (N, K) float32."""
        return F.softmax((teacher_scores.float() - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, teacher_scores: torch.Tensor, ctx: DistributedContext = _LOCAL) -> None:
        """Move the center towards the mean of ``teacher_scores`` (N, K) over all ranks.

        A rank with no rows (no masked patch in its batch) contributes zeros, as in the authors'
        code where the buffer of masked tokens is then empty.
        """
        scores = teacher_scores.float().reshape(-1, self.center.shape[1])
        local_mean = (
            scores.mean(dim=0, keepdim=True) if len(scores) else torch.zeros_like(self.center)
        )
        batch_mean = all_reduce_mean(local_mean, ctx)
        self.center.mul_(self.momentum).add_(batch_mean * (1.0 - self.momentum))


@torch.no_grad()
def sinkhorn_knopp(
    teacher_scores: torch.Tensor,
    temperature: float,
    iterations: int = 3,
    ctx: DistributedContext = _LOCAL,
) -> torch.Tensor:
    """Sinkhorn-Knopp targets (see the module docstring); (N, K) -> (N, K) float32, rows sum to 1.

    ``N`` may differ between ranks (masked patches); ``B`` is the sum of the ranks' ``N``.
    """
    scores = teacher_scores.float()
    count = all_reduce(torch.tensor(float(scores.shape[0]), device=scores.device), ctx, "sum")
    local_max = scores.max() if scores.numel() else torch.tensor(-torch.inf, device=scores.device)
    global_max = all_reduce(local_max, ctx, "max")
    q = torch.exp((scores - global_max) / temperature).t()  # (K, N)
    num_prototypes = q.shape[0]
    q = q / all_reduce(q.sum(), ctx, "sum")
    for _ in range(iterations):
        q = q / all_reduce(q.sum(dim=1, keepdim=True), ctx, "sum") / num_prototypes
        q = q / q.sum(dim=0, keepdim=True) / count
    return (q * count).t()


__all__ = ["EMACenter", "sinkhorn_knopp"]
