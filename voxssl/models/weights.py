"""Self-describing weights: a safetensors file whose header carries the :class:`Plan` as JSON.

``save_weights`` writes atomically; ``load_weights`` never executes code (safetensors only, no
pickle); ``load_backbone`` rebuilds the FPN from the plan, checks the plan against what the caller
expects, and loads strictly, so a mismatch is reported as one :class:`CheckpointError` naming the
file and the first offending field, key or shape.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxssl.errors import CheckpointError
from voxssl.models.build import build_backbone
from voxssl.models.fpn import FPN
from voxssl.models.plan import Plan, check_plan
from voxssl.utils.atomic import atomic_path

log = logging.getLogger(__name__)

FORMAT_NAME = "voxssl-weights"
_FORMAT_KEY = "format"
_PLAN_KEY = "voxssl.plan"
# Wrappers that prefix every key: DistributedDataParallel / DataParallel, torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_BACKBONE_PREFIX = "backbone."


def save_weights(
    path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], plan: Plan
) -> Path:
    """Write ``state_dict`` and ``plan`` to a ``.safetensors`` file (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor")
        tensors[key] = value.detach().to("cpu").contiguous().clone()  # clone: no shared storage
    metadata = {_FORMAT_KEY: FORMAT_NAME, _PLAN_KEY: plan.to_json()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(9)
    # A safetensors file starts with its 8-byte header length, then the JSON header "{": its first
    # byte can be 0x80 (a length of 128 + 256k), so check that before calling it a pickle.
    looks_like_safetensors = head[8:9] == b"{"
    if not looks_like_safetensors and (head[:2] == b"PK" or head[:1] == b"\x80"):
        raise CheckpointError(
            f"{path}: this is a PyTorch pickle checkpoint, not a voxssl safetensors file; voxssl does not "
            f"unpickle weights. Convert it first: voxssl weights import FILE --format vox2vec|hierarchical (see docs/weights.md)"
        )


def read_plan(path: str | os.PathLike) -> Plan:
    """The plan of a weights file, reading only its header."""
    from safetensors import safe_open

    path = Path(path)
    _check_file(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own (Rust) error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get(_FORMAT_KEY) != FORMAT_NAME or _PLAN_KEY not in metadata:
        raise CheckpointError(
            f"{path}: safetensors file without a voxssl plan (no architecture/preprocessing recorded); "
            f"convert it with voxssl weights import (see docs/weights.md)"
        )
    return Plan.from_json(metadata[_PLAN_KEY], source=str(path))


def load_weights(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], Plan]:
    """``(state_dict, plan)`` of a voxssl weights file (safetensors only; no code is executed)."""
    from safetensors.torch import load_file

    path = Path(path)
    plan = read_plan(path)
    try:
        state = load_file(str(path), device=str(device))
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read the tensors ({err})") from None
    return state, plan


def remove_leading_prefixes(key: str, prefixes: tuple[str, ...]) -> str:
    """``module.backbone.x`` -> ``x`` for prefixes (``module.``, ``backbone.``), in any order/repeat."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def strip_prefixes(
    state_dict: Mapping[str, torch.Tensor], take: str | None = _BACKBONE_PREFIX
) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``); keep only the ``take`` sub-module.

    When some keys start with ``take`` (e.g. ``backbone.`` in a pretraining or segmentation state
    dict), only those are kept, without the prefix; the heads' keys are dropped (logged).
    """
    state = {}
    for key, value in state_dict.items():
        state[remove_leading_prefixes(key, _WRAPPER_PREFIXES)] = value
    if take and any(key.startswith(take) for key in state):
        dropped = sorted(key.split(".")[0] for key in state if not key.startswith(take))
        if dropped:
            log.info(
                "keeping %s* only; dropping %d keys of %s",
                take,
                len(dropped),
                ", ".join(sorted(set(dropped))),
            )
        state = {key[len(take) :]: value for key, value in state.items() if key.startswith(take)}
    return state


def load_state_strict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str
) -> None:
    """``module.load_state_dict(strict=True)`` with an error naming the first bad key or shape."""
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing:
        raise CheckpointError(
            f"{source}: key '{missing[0]}' is missing from the weights ({len(missing)} missing in all); "
            f"the plan's architecture does not match the stored tensors"
        )
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected key '{unexpected[0]}' in the weights ({len(unexpected)} unexpected in all); "
            f"the plan's architecture does not match the stored tensors"
        )
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: key '{key}' has shape {tuple(state_dict[key].shape)} in the weights but "
                f"{tuple(tensor.shape)} in the model"
            )
    module.load_state_dict(dict(state_dict), strict=True)


def load_backbone(
    path: str | os.PathLike,
    expect: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[FPN, Plan]:
    """Rebuild the backbone from the file's plan, check ``expect``, load strictly.

    Args:
        path: a voxssl ``.safetensors`` file (kind backbone, pretrain or segmentation).
        expect: plan fields the caller relies on, nested or dotted, e.g.
            ``{"preprocessing.modality": "ct", "architecture.in_channels": 1}``.
        device: where the tensors go.

    Returns:
        ``(backbone, plan)``; the backbone is in eval mode.
    """

    state, plan = load_weights(path, device=device)
    check_plan(plan, expect, source=str(path))
    backbone = build_backbone(plan.model_config(source=str(path))).to(device)
    load_state_strict(backbone, strip_prefixes(state), source=str(path))
    return backbone.eval(), plan


__all__ = [
    "FORMAT_NAME",
    "load_backbone",
    "load_state_strict",
    "load_weights",
    "read_plan",
    "save_weights",
    "strip_prefixes",
]
