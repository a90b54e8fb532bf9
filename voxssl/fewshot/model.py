"""ALPNet: a slice encoder plus the ALP head; one object trained on episodes and used at test time."""

from __future__ import annotations

import torch
import torch.nn as nn

from voxssl.config.fewshot import FewShotConfig
from voxssl.fewshot.alp import ALPHead, alpnet_loss, grid_size, segment_logits
from voxssl.fewshot.encoders import SliceEncoder, build_encoder
from voxssl.vocabulary import IGNORE_INDEX


class ALPNet(nn.Module):
    def __init__(
        self,
        encoder: SliceEncoder,
        head: ALPHead,
        grid: int,
        eval_grid: int,
        class_weights: tuple[float, float],
        align_weight: float,
        mask_resize: str = "bilinear",
        align_weighted: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.grid = grid
        self.eval_grid = eval_grid
        background, foreground = class_weights
        self.class_weights = (background, foreground)
        self.align_weight = align_weight
        self.mask_resize = mask_resize
        self.align_weighted = align_weighted

    def current_grid(self) -> int:
        return self.grid if self.training else self.eval_grid

    def encode_pair(
        self, support: torch.Tensor, query: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One encoder pass over support and query together: (S, 3, H, W), (Q, 3, H, W)."""
        features = self.encoder(torch.cat([support, query]), self.current_grid())
        return features[: support.shape[0]], features[support.shape[0] :]

    def loss(
        self,
        support: torch.Tensor,
        support_label: torch.Tensor,
        query: torch.Tensor,
        query_label: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Episode loss; labels (S|Q, H, W) in {0, 1, 255}."""
        s_feat, q_feat = self.encode_pair(support, query)
        total, parts, _ = alpnet_loss(
            self.head,
            s_feat,
            support_label,
            q_feat,
            query_label,
            self.class_weights,
            self.align_weight,
            IGNORE_INDEX,
            self.mask_resize,
            self.align_weighted,
        )
        return total, parts

    def encode(self, slices: torch.Tensor) -> torch.Tensor:
        return self.encoder(slices, self.current_grid())

    def segment_features(
        self,
        s_feat: torch.Tensor,
        support_label: torch.Tensor,
        q_feat: torch.Tensor,
        size: tuple[int, int],
    ) -> torch.Tensor:
        """Foreground probability (Q, H, W) from already encoded support and query features."""
        logits = segment_logits(
            self.head, s_feat, support_label, q_feat, size, IGNORE_INDEX, self.mask_resize
        )
        return logits.softmax(dim=1)[:, 1]

    def forward(
        self, support: torch.Tensor, support_label: torch.Tensor, query: torch.Tensor
    ) -> torch.Tensor:
        """Foreground probability of every query pixel: (Q, H, W)."""
        s_feat, q_feat = self.encode_pair(support, query)
        return self.segment_features(s_feat, support_label, q_feat, grid_size(query))


def build_alpnet(config: FewShotConfig) -> ALPNet:
    alp = config.alp
    proto_grid = None
    if alp.local_rule == "reference":
        window_h, window_w = alp.train_window
        proto_grid = (max(1, alp.feature_grid // window_h), max(1, alp.feature_grid // window_w))
    head = ALPHead(
        alp.train_window,
        alp.eval_window,
        alp.mask_fraction,
        alp.temperature,
        alp.cosine_eps,
        proto_grid,
    )
    return ALPNet(
        build_encoder(config.encoder),
        head,
        alp.feature_grid,
        alp.eval_feature_grid,
        alp.class_weights,
        alp.align_weight,
        alp.support_mask_resize,
        alp.align_weighted,
    )


__all__ = ["ALPNet", "build_alpnet"]
