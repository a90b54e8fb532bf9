"""Symmetric InfoNCE / NT-Xent over voxel embeddings (SimCLR; vox2vec; seed 004 eq. 1).

For ``N`` positive pairs ``(z1_i, z2_i)`` (L2-normalised, ``D`` wide) the ``2N`` embeddings are
stacked, ``z = [z1; z2]``, and every embedding is contrasted with every other one::

    s_ab   = <z_a, z_b> / tau                                  (2N, 2N) logits
    loss_a = -log( exp(s_{a,p(a)}) / sum_{b != a} exp(s_ab) )  p(a): a's partner in the other view
    loss   = mean_a loss_a                                     (the mean of both directions)

so the negatives of a voxel are all other sampled voxels of the batch, from both views and from
every pair. It is computed as a cross-entropy over the logits with the self-similarity masked,
which is numerically stable (log-sum-exp), never exp-then-divide-then-log.

With ``gather_distributed=True`` inside an initialised process group, the columns of the logits
(the candidates) are the embeddings of *all* ranks, gathered with a gradient-correct all-gather
(:func:`voxssl.distributed.gather_with_gradient`), and each rank's rows are its own voxels;
ranks may hold different ``N``. Under DDP (which averages gradients over ranks) the result is the
gradient of the mean of the ranks' losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxssl.distributed import DistributedContext, gather_with_gradient


class InfoNCELoss(nn.Module):
    """Symmetric NT-Xent.

    Args:
        temperature: ``tau`` (vox2vec and seed 004: 0.1).
        normalise: L2-normalise the inputs first (harmless if the projector already did).
        gather_distributed: use the embeddings of every DDP rank as negatives.
    """

    def __init__(
        self, temperature: float = 0.1, normalise: bool = True, gather_distributed: bool = False
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.normalise = normalise
        self.gather_distributed = gather_distributed

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """``z1``, ``z2``: ``(N, D)``, row i of both is one positive pair. Returns a scalar."""
        if z1.shape != z2.shape or z1.ndim != 2:
            raise ValueError(
                f"z1 and z2 must both be (N, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        with torch.autocast(device_type=z1.device.type, enabled=False):
            return self._loss(at_least_float32(z1), at_least_float32(z2))

    def _loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        n = z1.shape[0]
        if self.normalise:
            z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
        all1, all2, offset = self._candidates(z1, z2)  # (M, D) each, M = N summed over ranks
        if n == 0:  # still joined the all-gather above (and its backward) so no rank waits forever
            return (all1.sum() + all2.sum()) * 0.0
        m = all1.shape[0]
        rows = torch.cat([z1, z2])  # (2N, D): this rank's voxels, view 1 then view 2
        columns = torch.cat([all1, all2])  # (2M, D)
        logits = rows @ columns.T / self.temperature  # (2N, 2M)
        local = torch.arange(n, device=z1.device) + offset  # this rank's voxels among the M
        self_columns = torch.cat([local, local + m])  # (2N,) where each row meets itself
        partner_columns = torch.cat([local + m, local])  # (2N,) its positive in the other view
        logits = logits.index_put(
            (torch.arange(2 * n, device=z1.device), self_columns),
            torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device),
        )
        return F.cross_entropy(logits, partner_columns)

    def _candidates(
        self, z1: torch.Tensor, z2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not self.gather_distributed:
            return z1, z2, 0
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return z1, z2, 0

        context = DistributedContext(
            rank=dist.get_rank(), world_size=dist.get_world_size(), device=z1.device
        )
        all1, offset = gather_with_gradient(z1, context)
        all2, _ = gather_with_gradient(z2, context)
        return all1, all2, offset


def at_least_float32(z: torch.Tensor) -> torch.Tensor:
    """Logits reach 1/tau = 10: bf16/fp16 would round them to ~0.06, so the loss runs in float32."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


__all__ = ["InfoNCELoss", "at_least_float32"]
