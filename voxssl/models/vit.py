"""DINOv2 ViTs (``transformers.Dinov2Model``) as voxssl weights: architecture in the plan, tensors in
safetensors, loaded without executing code.

A plan whose ``architecture`` has ``"family": "dinov2"`` describes a ViT instead of a 3D FPN: the
remaining fields are ``Dinov2Config`` arguments (:data:`ARCHITECTURE_FIELDS`). The state dict is
Hugging Face's key layout (``embeddings.*``, ``encoder.layer.<i>.*``, ``layernorm.*``), under a
prefix that depends on the plan's kind:

- ``backbone``: no prefix (the encoder ``voxssl dinov2 pretrain`` writes: the EMA teacher);
- ``pretrain``: a training checkpoint, ``teacher.backbone.*`` (+ student, heads, centers);
- ``classification``: ``backbone.*`` + ``head.*`` (``voxssl classify``).

:func:`load_vit` takes any of them and returns the backbone, so a continued-pretraining run folder,
its checkpoint, its encoder, an exported release or a trained classifier all serve as
``fewshot.encoder.weights`` or as ``voxssl classify --weights``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from voxssl.errors import CheckpointError
from voxssl.extras import require
from voxssl.models.plan import Plan
from voxssl.models.weights import FORMAT_NAME, load_state_strict, load_weights

if TYPE_CHECKING:  # annotations only: transformers is an optional dependency
    from transformers import Dinov2Model

FAMILY = "dinov2"
ARCHITECTURE_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "mlp_ratio",
    "patch_size",
    "image_size",
    "num_channels",
    "use_swiglu_ffn",
    "layer_norm_eps",
    "layerscale_value",
    "qkv_bias",
    "hidden_act",
    "use_mask_token",
)
#: Where the backbone's keys live in a state dict of each plan kind.
BACKBONE_PREFIX = {"backbone": "", "pretrain": "teacher.backbone.", "classification": "backbone."}


def is_vit_architecture(architecture: dict[str, Any]) -> bool:
    return architecture.get("family") == FAMILY


def vit_architecture(model: nn.Module) -> dict[str, Any]:
    """The plan ``architecture`` of a ``Dinov2Model``."""
    config = model.config
    return {"family": FAMILY, **{name: getattr(config, name) for name in ARCHITECTURE_FIELDS}}


def vit_config(architecture: dict[str, Any], source: str = "<plan>"):
    """``Dinov2Config`` from a plan ``architecture`` (CheckpointError when it is not a DINOv2 ViT)."""
    Dinov2Config = require("transformers", "a DINOv2 ViT").Dinov2Config

    if not is_vit_architecture(architecture):
        raise CheckpointError(f"{source}: the weights are not a DINOv2 ViT (a voxssl 3D backbone?)")
    unknown = sorted(set(architecture) - set(ARCHITECTURE_FIELDS) - {"family"})
    if unknown:
        raise CheckpointError(f"{source}: unknown ViT architecture field '{unknown[0]}'")
    return Dinov2Config(**{k: v for k, v in architecture.items() if k != "family"})


def build_vit(architecture: dict[str, Any], source: str = "<plan>") -> Dinov2Model:
    Dinov2Model = require("transformers", "a DINOv2 ViT").Dinov2Model

    return Dinov2Model(vit_config(architecture, source))


def vit_plan(
    model: nn.Module,
    preprocessing: dict[str, Any],
    recipe: dict[str, Any] | None = None,
    kind: str = "backbone",
    extra: dict[str, Any] | None = None,
) -> Plan:
    return Plan(
        architecture=vit_architecture(model),
        preprocessing=dict(preprocessing),
        recipe=dict(recipe or {}),
        kind=kind,
        extra=dict(extra or {}),
    )


def has_voxssl_plan(path: str | os.PathLike) -> bool:
    """Whether a .safetensors file carries a voxssl plan (reads only the header)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT_NAME
    except Exception:  # not a safetensors file: the caller reports it
        return False


def backbone_state(state: dict, plan: Plan, source: str) -> dict:
    """The backbone's tensors of a ViT state dict of any kind, without their prefix."""
    prefix = BACKBONE_PREFIX.get(plan.kind)
    if prefix is None:
        raise CheckpointError(f"{source}: a DINOv2 plan of kind {plan.kind!r} holds no backbone")
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def vit_patch_size(model: Dinov2Model) -> int:
    """The ViT's patch size in pixels (14 for the released DINOv2 weights)."""
    patch = model.config.patch_size
    return int(patch if isinstance(patch, int) else patch[0])


def load_vit(path: str | os.PathLike, device: str = "cpu") -> tuple[Dinov2Model, Plan]:
    """``(Dinov2Model, plan)`` from a voxssl ViT weights file of any kind; strict, no pickle."""

    path = Path(path)
    state, plan = load_weights(path, device=device)
    model = build_vit(plan.architecture, source=str(path))
    nn.Module.to(model, device)  # (transformers' own .to is typed for its decorator, not callers)
    load_state_strict(model, backbone_state(state, plan, str(path)), source=str(path))
    return model.eval(), plan


__all__ = [
    "ARCHITECTURE_FIELDS",
    "BACKBONE_PREFIX",
    "FAMILY",
    "backbone_state",
    "build_vit",
    "has_voxssl_plan",
    "is_vit_architecture",
    "load_vit",
    "vit_architecture",
    "vit_config",
    "vit_patch_size",
    "vit_plan",
]
