"""The plain eager PyTorch pretraining step that voxssl's step is measured and tested against.

A straightforward implementation of vox2vec's layer layout and loss, written the way a
researcher would write it (and the way the authors' code runs): ``nn.Conv3d`` / ``nn.BatchNorm3d``
/ ``nn.ReLU`` modules on contiguous NCDHW tensors, one forward per view, the voxel embeddings
gathered pair by pair, InfoNCE from three logit matrices, gradient-norm clipping at 1 (vox2vec's
``gradient_clip_val``) and ``torch.optim.Adam`` with PyTorch's default implementation. Nothing
here is tuned: it is the baseline of the speed ratio in ``benchmarks/pretrain_throughput.py``
and the "before" of the equality tests in ``tests/train/test_fast_step.py``.

The modules carry the same state-dict keys as :class:`voxssl.models.pretrain.PretrainModel`, so
``reference.load_state_dict(voxssl_model.state_dict())`` starts both from the same weights.
Layout (``c_i = base * 2**i``): first 3x3x3 conv; per encoder level two pre-activation residual
blocks (BN-ReLU-Conv3-BN-ReLU-Conv3 + identity), max-pool 2 (ceil) + 1x1 conv to ``c_{i+1}``;
bottom stage; per decoder level 1x1 conv ``c_{i+1} -> c_i``, nearest x2, cropped, + 1x1 skip
conv, two residual blocks. Optional per-level 1x1 projections (hierarchical preset, bias on level
0 only), projector Linear-BN-ReLU x2 + Linear + L2 norm, optional 1x1 reconstruction head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.BatchNorm3d(c),
            nn.ReLU(),
            nn.Conv3d(c, c, kernel_size=3, padding=1),
            nn.BatchNorm3d(c),
            nn.ReLU(),
            nn.Conv3d(c, c, kernel_size=3, padding=1),
        )

    def forward(self, x):
        return self.layers(x) + x


class Stage(nn.Module):
    def __init__(self, c: int, blocks: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ResBlock(c) for _ in range(blocks)])

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class ReferenceFPN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        base: int,
        levels: int,
        blocks: int = 2,
        projection_channels: int | None = None,
    ) -> None:
        super().__init__()
        channels = [base * 2**i for i in range(levels)]
        self.first_conv = nn.Conv3d(in_channels, base, kernel_size=3, padding=1)
        self.left_blocks = nn.ModuleList([Stage(c, blocks) for c in channels[:-1]])
        self.down_blocks = nn.ModuleList(
            [
                nn.Sequential(nn.MaxPool3d(2, ceil_mode=True), nn.Conv3d(c, 2 * c, kernel_size=1))
                for c in channels[:-1]
            ]
        )
        self.bottom_block = Stage(channels[-1], blocks)
        decoder = channels[:-1][::-1]
        self.up_blocks = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv3d(2 * c, c, kernel_size=1), nn.Upsample(scale_factor=2, mode="nearest")
                )
                for c in decoder
            ]
        )
        self.skip_blocks = nn.ModuleList([nn.Conv3d(c, c, kernel_size=1) for c in decoder])
        self.right_blocks = nn.ModuleList([Stage(c, blocks) for c in decoder])
        self.projections = None
        if projection_channels is not None:
            self.projections = nn.ModuleList(
                [
                    nn.Conv3d(c, projection_channels, kernel_size=1, bias=(i == 0))
                    for i, c in enumerate(channels)
                ]
            )

    def forward(self, x):
        """Returns (projected pyramid, finest decoder map before projection)."""
        x = self.first_conv(x)
        skips = []
        for left, down in zip(self.left_blocks, self.down_blocks, strict=True):
            x = left(x)
            skips.append(x)
            x = down(x)
        x = self.bottom_block(x)
        pyramid = [x]
        for up, skip, right in zip(
            self.up_blocks, self.skip_blocks, self.right_blocks, strict=True
        ):
            fmap = skips.pop()
            x = up(x)
            x = x[(..., *map(slice, fmap.shape[-3:]))]
            x = right(x + skip(fmap))
            pyramid.insert(0, x)
        finest = pyramid[0]
        if self.projections is not None:
            pyramid = [p(level) for p, level in zip(self.projections, pyramid, strict=True)]
        return pyramid, finest


class ReferenceModel(nn.Module):
    """Backbone + projector (+ 1x1 reconstruction head); keys as voxssl's ``PretrainModel``."""

    def __init__(
        self,
        in_channels: int,
        base: int,
        levels: int,
        blocks: int = 2,
        projection_channels: int | None = None,
        projector_hidden: int | None = None,
        projector_out: int = 128,
        reconstruction: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = ReferenceFPN(in_channels, base, levels, blocks, projection_channels)
        embed = (
            sum(base * 2**i for i in range(levels))
            if projection_channels is None
            else projection_channels * levels
        )
        hidden = projector_hidden or embed
        self.projector = nn.Module()
        self.projector.layers = nn.Sequential(
            nn.Linear(embed, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, projector_out),
        )
        self.reconstruction_head = None
        if reconstruction:
            self.reconstruction_head = nn.Module()
            self.reconstruction_head.layers = nn.Sequential(
                nn.Conv3d(base, in_channels, kernel_size=1)
            )

    @classmethod
    def from_config(cls, cfg) -> ReferenceModel:
        """The reference of a resolved :class:`voxssl.config.model.ModelConfig` (3D, batch norm,
        ``learned`` or ``none`` projection, ``conv1x1`` or ``none`` reconstruction)."""
        if cfg.spatial_dims != 3 or cfg.norm != "batch":
            raise ValueError("the eager reference is the 3D batch-norm FPN")
        if cfg.projection not in ("none", "learned") or cfg.reconstruction not in (
            "none",
            "conv1x1",
        ):
            raise ValueError("the eager reference has learned/no projections, conv1x1/no head")
        return cls(
            cfg.in_channels,
            cfg.base_channels,
            cfg.num_levels,
            cfg.blocks_per_stage,
            cfg.projection_channels if cfg.projection == "learned" else None,
            cfg.projector_hidden,
            cfg.projector_out,
            cfg.reconstruction == "conv1x1",
        )

    def embed(self, images: torch.Tensor, voxels: list[torch.Tensor]):
        """Projected embeddings of each pair's voxels (vox2vec: pair by pair), and the finest map."""
        pyramid, finest = self.backbone(images)
        vectors = torch.cat(
            [
                torch.cat(
                    [
                        level[j].moveaxis(0, -1)[(v // 2**i).unbind(1)]
                        for i, level in enumerate(pyramid)
                    ],
                    dim=1,
                )
                for j, v in enumerate(voxels)
            ]
        )
        return F.normalize(self.projector.layers(vectors), dim=1), finest


def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """vox2vec's InfoNCE: both directions, self-similarities masked."""
    logits_11 = z1 @ z1.T / temperature
    logits_11.fill_diagonal_(float("-inf"))
    logits_12 = z1 @ z2.T / temperature
    logits_22 = z2 @ z2.T / temperature
    logits_22.fill_diagonal_(float("-inf"))
    loss_1 = torch.mean(
        -logits_12.diag() + torch.logsumexp(torch.cat([logits_11, logits_12], dim=1), dim=1)
    )
    loss_2 = torch.mean(
        -logits_12.diag() + torch.logsumexp(torch.cat([logits_12.T, logits_22], dim=1), dim=1)
    )
    return (loss_1 + loss_2) / 2


def reference_loss(model: ReferenceModel, batch: dict, cfg) -> tuple[torch.Tensor, dict]:
    """The total loss of one batch (``cfg``: a ``PretrainConfig``; equivariance is not part of
    the reference) and its unweighted terms."""
    valid = batch["valid"]
    voxels1 = [p[v] for p, v in zip(batch["positions1"], valid, strict=True)]
    voxels2 = [p[v] for p, v in zip(batch["positions2"], valid, strict=True)]
    z1, finest1 = model.embed(batch["view1"], voxels1)
    z2, finest2 = model.embed(batch["view2"], voxels2)
    terms = {"infonce": info_nce(z1, z2, cfg.infonce_temperature)}
    loss = cfg.infonce_weight * terms["infonce"]
    if cfg.reconstruction_weight > 0:
        head = model.reconstruction_head.layers
        terms["reconstruction"] = 0.5 * (
            F.mse_loss(head(finest1), batch["target1"])
            + F.mse_loss(head(finest2), batch["target2"])
        )
        loss = loss + cfg.reconstruction_weight * terms["reconstruction"]
    return loss, terms


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Adam:
    """``torch.optim.Adam`` with PyTorch's default implementation choice."""
    return torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )


def reference_step(model: ReferenceModel, optimizer, batch: dict, cfg) -> torch.Tensor:
    """Forward both views, loss, backward, clip the gradient norm, Adam step; returns the loss."""
    loss, _ = reference_loss(model, batch, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach()


__all__ = [
    "ReferenceModel",
    "info_nce",
    "make_optimizer",
    "reference_loss",
    "reference_step",
]
