"""DINOv2's parameter groups: layer-wise learning-rate decay, a smaller lr for the patch embedding,
no weight decay on biases, norms and LayerScale, and the prototypes (heads' last layers) apart.

For a ViT of depth ``L`` the learning rate of a parameter is multiplied by
``layerwise_decay ** (L + 1 - layer)`` where ``layer`` is 0 for the embeddings (CLS token, mask
token, position and patch embeddings), ``i + 1`` for block ``i`` and ``L + 1`` for the final norm
and the heads; the patch embedding's is further multiplied by ``patch_embed_lr_mult``. The weight
decay of biases, of every norm and of LayerScale (``gamma`` in DINOv2, ``lambda1`` in
``transformers``) is 0. Parameters with the same (lr multiplier, wd multiplier, last layer) share
one AdamW group.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:  # annotations only: transformers is an optional dependency
    from transformers import Dinov2Model

_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.")
_EMBEDDING_PREFIX = "embeddings."


def backbone_layer(name: str, depth: int) -> int:
    """0 for embeddings, i + 1 for block i, depth + 1 for the rest (final norm)."""
    if name.startswith(_EMBEDDING_PREFIX):
        return 0
    match = _BLOCK.match(name)
    return int(match.group(1)) + 1 if match else depth + 1


def no_weight_decay(name: str) -> bool:
    return name.endswith(".bias") or "norm" in name or "lambda1" in name


def parameter_groups(
    backbone: Dinov2Model,
    heads: Mapping[str, nn.Module],
    layerwise_decay: float,
    patch_embed_lr_mult: float,
) -> list[dict[str, Any]]:
    """AdamW groups with ``lr_multiplier``, ``wd_multiplier``, ``is_last_layer`` and ``names``."""
    depth = len(backbone.encoder.layer)
    entries = []
    for name, parameter in backbone.named_parameters():
        if not parameter.requires_grad:
            continue
        lr_mult = layerwise_decay ** (depth + 1 - backbone_layer(name, depth))
        if "patch_embeddings" in name:
            lr_mult *= patch_embed_lr_mult
        entries.append((f"backbone.{name}", parameter, lr_mult, no_weight_decay(name), False))
    for head_name, head in heads.items():
        for name, parameter in head.named_parameters():
            if parameter.requires_grad:
                last = name.startswith("last_layer.")
                entries.append((f"{head_name}.{name}", parameter, 1.0, no_weight_decay(name), last))
    groups: dict[tuple, dict[str, Any]] = {}
    for full_name, parameter, lr_mult, no_decay, last in entries:
        key = (lr_mult, 0.0 if no_decay else 1.0, last)
        group = groups.setdefault(
            key,
            {
                "params": [],
                "names": [],
                "lr_multiplier": key[0],
                "wd_multiplier": key[1],
                "is_last_layer": last,
            },
        )
        group["params"].append(parameter)
        group["names"].append(full_name)
    return list(groups.values())


def apply_step_values(optimizer, lr: float, last_layer_lr: float, weight_decay: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = (last_layer_lr if group["is_last_layer"] else lr) * group["lr_multiplier"]
        group["weight_decay"] = weight_decay * group["wd_multiplier"]


__all__ = ["apply_step_values", "backbone_layer", "no_weight_decay", "parameter_groups"]
