"""DINO's image-level loss: the student's CLS-token prototypes match the teacher's (DINOv2, eq. 1).

Shapes: ``G`` global crops (2 in DINOv2) and ``L`` local crops of each of ``B`` images; ``K``
prototypes. The teacher sees only the global crops and gives target distributions ``p_g[b]``
(centred-and-sharpened or Sinkhorn-Knopp, :mod:`voxssl.losses.dino_targets`); the student gives
scores ``s_v[b]`` for every crop ``v``. With the student temperature ``tau_s`` (0.1)::

    H(p, s) = - sum_k p_k log softmax(s / tau_s)_k
    L_local  = 1/T sum_{v local}  sum_{g}        mean_b H(p_g[b], s_v[b])
    L_global = 1/T sum_{v global} sum_{g != v}   mean_b H(p_g[b], s_v[b])
    T        = G (G - 1) + L G                    (the number of (student, teacher) crop pairs)

so ``L_local + L_global`` is the mean cross-entropy over every pair of different crops of an
image: a crop is never compared with itself. ``log_softmax`` keeps it stable; it is computed in
float32 (also under bf16 autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DINOClsTokenLoss(nn.Module):
    """Args: ``student_temperature``: tau_s (DINOv2: 0.1)."""

    def __init__(self, student_temperature: float = 0.1) -> None:
        super().__init__()
        if student_temperature <= 0:
            raise ValueError(f"student_temperature must be > 0, got {student_temperature}")
        self.student_temperature = student_temperature

    def forward(
        self,
        student_global: torch.Tensor,
        student_local: torch.Tensor | None,
        teacher_targets: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(L_local, L_global)``.

        Args:
            student_global: (G, B, K) student scores of the global crops.
            student_local: (L, B, K) student scores of the local crops, or None (L = 0).
            teacher_targets: (G, B, K) teacher distributions of the global crops (rows sum to 1).
        """
        if student_global.shape != teacher_targets.shape:
            raise ValueError(
                f"student_global {tuple(student_global.shape)} and teacher_targets "
                f"{tuple(teacher_targets.shape)} must both be (G, B, K)"
            )
        num_global = student_global.shape[0]
        num_local = 0 if student_local is None else student_local.shape[0]
        pairs = num_global * (num_global - 1) + num_local * num_global
        if pairs == 0:
            raise ValueError("the DINO loss needs two global crops or at least one local crop")
        targets = teacher_targets.float()
        with torch.autocast(device_type=student_global.device.type, enabled=False):
            global_terms = self._cross_entropy(student_global, targets)  # (G, G) student x teacher
            off_diagonal = ~torch.eye(num_global, dtype=torch.bool, device=global_terms.device)
            loss_global = global_terms[off_diagonal].sum() / pairs
            if student_local is not None and num_local:
                loss_local = self._cross_entropy(student_local, targets).sum() / pairs
            else:
                loss_local = student_global.new_zeros((), dtype=torch.float32)
        return loss_local, loss_global

    def _cross_entropy(self, student: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """(V, B, K) scores, (G, B, K) targets -> (V, G): mean over b of H(p_g[b], s_v[b])."""
        log_probs = F.log_softmax(student.float() / self.student_temperature, dim=-1)
        return -torch.einsum("gbk,vbk->vg", targets, log_probs) / student.shape[1]


__all__ = ["DINOClsTokenLoss"]
