"""iBOT's masked-patch loss (Zhou et al., 2022; DINOv2 section 3): the student, shown a global
crop with some patches replaced by the mask token, predicts the teacher's prototype distribution
of those patches, which the teacher computes from the unmasked crop.

Shapes: ``I`` images in the loss (all global crops of the batch, masked or not), ``M`` masked
patches in total, ``K`` prototypes; ``n_i`` the number of masked patches of image ``i``. With the
student temperature ``tau_s`` (0.1)::

    H(p, s) = - sum_k p_k log softmax(s / tau_s)_k
    L       = 1/I sum_i 1/n_i sum_{masked patches j of image i} H(p_j, s_j)

i.e. each image's masked patches are averaged, and the per-image means are averaged over all
``I`` images (those without a mask count as zero, as in the authors' code).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class IBOTPatchLoss(nn.Module):
    """Args: ``student_temperature``: tau_s (DINOv2: 0.1)."""

    def __init__(self, student_temperature: float = 0.1) -> None:
        super().__init__()
        if student_temperature <= 0:
            raise ValueError(f"student_temperature must be > 0, got {student_temperature}")
        self.student_temperature = student_temperature

    def forward(
        self,
        student_masked: torch.Tensor,
        teacher_targets: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """Scalar loss.

        Args:
            student_masked: (M, K) student scores of the masked patches, in the order of
                ``masks.nonzero()`` (image by image, patch by patch).
            teacher_targets: (M, K) teacher distributions of the same patches.
            masks: (I, N) bool, the patches masked in each of the I images.
        """
        masked = int(masks.sum())
        if student_masked.shape[0] != masked or teacher_targets.shape[0] != masked:
            raise ValueError(
                f"{masked} masked patches but {student_masked.shape[0]} student and "
                f"{teacher_targets.shape[0]} teacher rows"
            )
        with torch.autocast(device_type=student_masked.device.type, enabled=False):
            per_image = masks.sum(dim=1, keepdim=True).clamp(min=1).float()  # (I, 1)
            weights = (1.0 / per_image).expand_as(masks)[masks]  # (M,)
            log_probs = F.log_softmax(student_masked.float() / self.student_temperature, dim=-1)
            cross_entropy = -(teacher_targets.float() * log_probs).sum(dim=-1)  # (M,)
            return (cross_entropy * weights).sum() / masks.shape[0]


__all__ = ["IBOTPatchLoss"]
