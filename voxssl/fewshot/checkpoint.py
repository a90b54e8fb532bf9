"""Few-shot model weights: the trainable parameters in safetensors, the config in its metadata.

Only what training changed is stored (LoRA adapters, slice adapter, or a whole small CNN): the
frozen DINOv2 weights are rebuilt from their own source (encoder.weights / cache / hub), so a
ViT-L model file is a few MB. The ``fewshot`` section that built the model travels in the
metadata and rebuilds the same architecture at evaluation.

Training checkpoints (``*.state.pt``, for resuming) add the optimiser, the step and the random
state; they are loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from voxssl import __version__
from voxssl.config.fewshot import FewShotConfig
from voxssl.config.loader import from_dict, to_dict
from voxssl.errors import CheckpointError
from voxssl.training import load_state, save_state
from voxssl.utils.atomic import atomic_path

FORMAT = "voxssl-fewshot-alpnet/1"


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained parameters, plus the persistent buffers of the modules that own one (a trained
    BatchNorm's running statistics, e.g. in the SSL-ALPNet ResNet)."""
    state = {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }
    for prefix, module in model.named_modules():
        if not any(p.requires_grad for p in module.parameters(recurse=False)):
            continue
        for name, buffer in module.named_buffers(recurse=False):
            if buffer is not None and name not in module._non_persistent_buffers_set:
                state[f"{prefix}.{name}" if prefix else name] = buffer.detach().cpu().contiguous()
    return state


def save_fewshot_weights(
    path: Path, model: torch.nn.Module, config: FewShotConfig, extra: dict[str, Any] | None = None
) -> Path:
    from safetensors.torch import save_file

    metadata = {
        "format": FORMAT,
        "voxssl_version": __version__,
        "fewshot": json.dumps(to_dict(config)),
        "extra": json.dumps(extra or {}),
    }
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(trainable_state(model), str(tmp), metadata=metadata)
    return Path(path)


def read_fewshot_weights(
    path: Path,
) -> tuple[dict[str, torch.Tensor], FewShotConfig, dict[str, Any]]:
    """(trainable tensors, the config that built them, extra metadata)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"few-shot weights not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            names = list(handle.keys())  # a safetensors handle is not iterable
            tensors = {key: handle.get_tensor(key) for key in names}
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not voxssl few-shot weights (format {metadata.get('format')!r})"
        )
    config = from_dict(
        FewShotConfig, json.loads(metadata["fewshot"]), where="fewshot", source=str(path)
    )
    return tensors, config, json.loads(metadata.get("extra", "{}"))


def load_trainable(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy stored tensors into ``model``; every trainable parameter must be covered (buffers are
    optional: files written before they were stored have none)."""
    params: dict[str, torch.Tensor] = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))  # trained BatchNorm statistics (optional)
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    unknown = sorted(set(tensors) - set(params))
    missing = sorted(expected - set(tensors))
    if unknown or missing:
        raise CheckpointError(
            f"{path}: weights do not match the model (unknown {unknown[:3]}, missing {missing[:3]})"
        )
    with torch.no_grad():
        for name, tensor in tensors.items():
            if params[name].shape != tensor.shape:
                raise CheckpointError(
                    f"{path}: {name} has shape {tuple(tensor.shape)}, model {tuple(params[name].shape)}"
                )
            params[name].copy_(tensor)


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    optimiser: torch.optim.Optimizer,
    step: int,
    rng_state: dict[str, Any],
) -> None:
    state = {
        "model": trainable_state(model),
        "optimiser": optimiser.state_dict(),
        "step": step,
        "rng": json.dumps(rng_state),  # numpy's 128-bit generator state: not a tensor
    }
    save_state(path, state)


def load_training_state(path: Path) -> dict[str, Any]:
    state = load_state(path, "few-shot training state", hint="delete it to restart")
    state["rng"] = json.loads(state["rng"])
    return state


__all__ = [
    "load_trainable",
    "load_training_state",
    "read_fewshot_weights",
    "save_fewshot_weights",
    "save_training_state",
    "trainable_state",
]
