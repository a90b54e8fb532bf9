"""Adaptive local prototype pooling (ALP; Ouyang et al., ECCV 2020) and the ALPNet losses.

Shapes: ``S`` support images, ``Q`` query images, ``D`` feature channels, ``h x w`` the feature
grid, ``H x W`` the image. One way (one foreground class) per call; the background is class 0.

For a class with mask ``m`` on the feature grid and support features ``f``:

* local prototypes  ``p_k = avgpool_window(f)_k`` for every window ``k`` with
  ``avgpool_window(m)_k > mask_fraction``;
* the foreground also gets the global masked average ``g = sum(f m) / (sum(m) + 1e-5)``; when no
  window qualifies (an object smaller than a window) a class has only its global prototype. With
  ``local_rule: reference`` (both published codes) the foreground uses local prototypes only when
  the mask pooled with the *training* window scaled to the grid (``grid // proto_grid``: 4 on a
  32 grid, 6 on 48) reaches ``mask_fraction`` somewhere, also at test time;
* similarity of prototype ``l`` at query pixel ``x``: ``S_l(x) = T cos(p_l, f_q(x))`` with the
  norms clamped below at ``eps``;
* fusion: ``S(c, x) = sum_l S_l(x) softmax_l(S_l(x))``; the class logits ``S(c, x)`` are
  upsampled bilinearly to ``H x W``; probabilities are their softmax over classes.

Support masks reach the feature grid by ``nearest`` sampling (DINOv2-ALPNet's code) or
``bilinear`` averaging (SSL-ALPNet's code); the predicted query mask of the alignment loss is
taken on the feature grid (the argmax of the grid logits, both codes). The alignment cross-entropy is unweighted in both codes
(``align_weighted: false``). tests/fewshot/test_alp_parity.py checks all of it against the
reference code's outputs (tests/fixtures/parity/).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK_EPS = 1e-5


def local_prototypes(
    features: torch.Tensor, mask: torch.Tensor, window: tuple[int, int], fraction: float
) -> torch.Tensor:
    """Prototypes of the windows mostly inside ``mask``.

    features: (S, D, h, w); mask: (S, h, w) in [0, 1]. Returns (P, D).
    """
    pooled_features = F.avg_pool2d(features, window)  # (S, D, h', w')
    pooled_mask = F.avg_pool2d(mask[:, None], window)[:, 0]  # (S, h', w')
    keep = pooled_mask > fraction
    return pooled_features.permute(0, 2, 3, 1)[keep]  # (P, D)


def global_prototype(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked average over all support images: (S, D, h, w), (S, h, w) -> (1, D)."""
    total = (features * mask[:, None]).sum(dim=(0, 2, 3))
    return (total / (mask.sum() + MASK_EPS))[None]


def class_prototypes(
    features: torch.Tensor,
    mask: torch.Tensor,
    window: tuple[int, int],
    fraction: float,
    with_global: bool,
    decision_window: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Local prototypes (+ the global one when ``with_global``); the global one alone when no window
    qualifies, or (with ``decision_window``) when the mask pooled with that window never reaches
    ``fraction`` (the published codes' test, ``>=``)."""
    if decision_window is not None:
        pooled = F.avg_pool2d(mask[:, None], decision_window)
        if pooled.numel() == 0 or float(pooled.max()) < fraction:
            return global_prototype(features, mask)
    local = local_prototypes(features, mask, window, fraction)
    if local.shape[0] == 0:
        return global_prototype(features, mask)
    if with_global:
        return torch.cat([local, global_prototype(features, mask)], dim=0)
    return local


def prototype_similarity(
    query: torch.Tensor, prototypes: torch.Tensor, temperature: float, eps: float
) -> torch.Tensor:
    """``T * cos`` between every prototype and every query pixel: (Q, D, h, w), (P, D) -> (Q, P, h, w)."""
    q = query / query.norm(dim=1, keepdim=True).clamp_min(eps)
    p = prototypes / prototypes.norm(dim=1, keepdim=True).clamp_min(eps)
    return temperature * torch.einsum("qdhw,pd->qphw", q, p)


def grid_size(tensor: torch.Tensor) -> tuple[int, int]:
    """The last two sizes of ``tensor``: (h, w) of a feature grid, (H, W) of an image."""
    height, width = tensor.shape[-2:]
    return height, width


def _pair(values: tuple[int, int]) -> tuple[int, int]:
    first, second = values  # a list from a caller becomes a tuple; 3 values are an error
    return first, second


def fuse_similarities(similarity: torch.Tensor) -> torch.Tensor:
    """``S'(x) = sum_l S_l(x) softmax_l(S_l(x))``: (Q, P, h, w) -> (Q, h, w)."""
    return (similarity * similarity.softmax(dim=1)).sum(dim=1)


class ALPHead(nn.Module):
    """Segment query features given support features and a binary support mask (1-way)."""

    def __init__(
        self,
        window: tuple[int, int],
        eval_window: tuple[int, int],
        mask_fraction: float,
        temperature: float,
        eps: float,
        proto_grid: tuple[int, int] | None = None,
    ) -> None:
        """``proto_grid``: the training grid divided by the training window (32 / 4 = 8); when set,
        the foreground's local prototypes are used only if the mask pooled with the window
        ``grid // proto_grid`` reaches ``mask_fraction`` (``local_rule: reference``)."""
        super().__init__()
        self.window = _pair(window)
        self.eval_window = _pair(eval_window)
        self.mask_fraction = mask_fraction
        self.temperature = temperature
        self.eps = eps
        self.proto_grid = _pair(proto_grid) if proto_grid is not None else None

    def current_window(self) -> tuple[int, int]:
        return self.window if self.training else self.eval_window

    def decision_window(self, grid: tuple[int, int]) -> tuple[int, int] | None:
        if self.proto_grid is None:
            return None
        return (max(1, grid[0] // self.proto_grid[0]), max(1, grid[1] // self.proto_grid[1]))

    def forward(
        self,
        support: torch.Tensor,
        foreground: torch.Tensor,
        query: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits on the feature grid.

        support: (S, D, h, w); foreground: (S, h, w) fraction of foreground per feature cell;
        query: (Q, D, h, w); valid: (S, h, w) fraction of labelled (not ignored) pixels, or None.
        Returns (Q, 2, h, w): background and foreground logits.
        """
        # Prototypes and cosines in fp32 even under bf16 autocast: the head is cheap and eps = 1e-4
        # is below bf16's resolution.
        with torch.autocast(device_type=query.device.type, enabled=False):
            support, query, foreground = support.float(), query.float(), foreground.float()
            valid = torch.ones_like(foreground) if valid is None else valid.float()
            background = (valid - foreground).clamp_min(0.0)
            window = self.current_window()
            decision = self.decision_window(grid_size(support))
            scores = []
            for mask, with_global in ((background, False), (foreground, True)):
                protos = class_prototypes(
                    support,
                    mask,
                    window,
                    self.mask_fraction,
                    with_global,
                    decision if with_global else None,
                )
                scores.append(
                    fuse_similarities(
                        prototype_similarity(query, protos, self.temperature, self.eps)
                    )
                )
            return torch.stack(scores, dim=1)


def mask_to_grid(mask: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """A (N, H, W) {0, 1} mask on the feature grid: ``bilinear`` averaging (fractions in [0, 1]) or
    ``nearest`` sampling (pixel ``floor(i * H / h)``, PyTorch's ``nearest``)."""
    if mode == "nearest":
        return F.interpolate(mask[:, None].float(), size=size, mode="nearest")[:, 0]
    if mode != "bilinear":
        raise ValueError(f"mask resize mode must be nearest or bilinear, got {mode!r}")
    return F.interpolate(mask[:, None].float(), size=size, mode="bilinear", align_corners=False)[
        :, 0
    ]


def grid_logits(
    head: ALPHead,
    support_features: torch.Tensor,
    support_label: torch.Tensor,
    query_features: torch.Tensor,
    ignore_index: int = 255,
    mask_resize: str = "bilinear",
) -> torch.Tensor:
    """Class logits (Q, 2, h, w) of the query on the feature grid (support mask to the grid, ALP)."""
    grid = grid_size(support_features)
    fg, valid = split_label(support_label, ignore_index)
    return head(
        support_features,
        mask_to_grid(fg, grid, mask_resize),
        query_features,
        mask_to_grid(valid, grid, mask_resize),
    )


def segment_logits(
    head: ALPHead,
    support_features: torch.Tensor,
    support_label: torch.Tensor,
    query_features: torch.Tensor,
    size: tuple[int, int],
    ignore_index: int = 255,
    mask_resize: str = "bilinear",
) -> torch.Tensor:
    """Class logits (Q, 2, H, W) of the query: :func:`grid_logits` upsampled bilinearly."""
    logits = grid_logits(
        head, support_features, support_label, query_features, ignore_index, mask_resize
    )
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)


def split_label(label: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) label in {0, 1, ignore} -> foreground and valid float masks."""
    valid = (label != ignore_index).float()
    foreground = (label == 1).float()
    return foreground, valid


def alpnet_loss(
    head: ALPHead,
    support_features: torch.Tensor,
    support_label: torch.Tensor,
    query_features: torch.Tensor,
    query_label: torch.Tensor,
    class_weights: tuple[float, float],
    align_weight: float,
    ignore_index: int = 255,
    mask_resize: str = "bilinear",
    align_weighted: bool = False,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """Segmentation cross-entropy (``class_weights``) plus the PANet alignment loss (support and
    query swapped; weighted by ``class_weights`` only with ``align_weighted``).

    support_label, query_label: (S, H, W), (Q, H, W) in {0, 1, ignore_index}.
    Returns (total loss, scalar parts, query logits at image resolution (Q, 2, H, W)).
    """
    weights = torch.tensor(class_weights, dtype=torch.float32, device=query_features.device)
    coarse = grid_logits(
        head, support_features, support_label, query_features, ignore_index, mask_resize
    )
    logits = F.interpolate(  # fp32 loss under autocast
        coarse.float(), size=tuple(query_label.shape[-2:]), mode="bilinear", align_corners=False
    )
    seg = F.cross_entropy(logits, query_label.long(), weight=weights, ignore_index=ignore_index)
    parts = {"seg": float(seg.detach())}
    total = seg
    if align_weight > 0:
        # hard mask as in PANet, taken on the feature grid (both published codes)
        predicted = coarse.argmax(dim=1).float()  # (Q, h, w)
        back = head(query_features, predicted, support_features)
        back = F.interpolate(
            back.float(), size=support_label.shape[-2:], mode="bilinear", align_corners=False
        )
        align = F.cross_entropy(
            back,
            support_label.long(),
            weight=weights if align_weighted else None,
            ignore_index=ignore_index,
        )
        parts["align"] = float(align.detach())
        total = total + align_weight * align
    return total, parts, logits


__all__ = [
    "ALPHead",
    "alpnet_loss",
    "class_prototypes",
    "fuse_similarities",
    "global_prototype",
    "grid_logits",
    "local_prototypes",
    "mask_to_grid",
    "prototype_similarity",
    "segment_logits",
    "split_label",
]
