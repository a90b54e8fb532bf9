"""DINOv2 ViT encoders (Oquab et al., 2023) built with ``transformers``, offline, plus LoRA.

The architectures are written out here so that a model builds with no network; the weights come
from, in order: an explicit local file or folder, the voxssl weights cache
(``$VOXSSL_HOME/dinov2/<size>``), then the Hugging Face hub when online.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from voxssl.errors import CheckpointError, VoxsslError
from voxssl.extras import require
from voxssl.hub.resolve import weights_in_folder
from voxssl.models.vit import has_voxssl_plan, load_vit, vit_patch_size

if TYPE_CHECKING:  # annotations only: transformers is an optional dependency
    from transformers import Dinov2Model

log = logging.getLogger(__name__)

PATCH_SIZE = 14

#: ViT-S/14, B/14, L/14, g/14 as released by Meta (hidden width, depth, heads, SwiGLU MLP).
ARCHITECTURES: dict[str, dict] = {
    "small": {
        "hidden_size": 384,
        "num_hidden_layers": 12,
        "num_attention_heads": 6,
        "use_swiglu_ffn": False,
    },
    "base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "use_swiglu_ffn": False,
    },
    "large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "use_swiglu_ffn": False,
    },
    "giant": {
        "hidden_size": 1536,
        "num_hidden_layers": 40,
        "num_attention_heads": 24,
        "use_swiglu_ffn": True,
    },
}
HUB_IDS = {size: f"facebook/dinov2-{size}" for size in ARCHITECTURES}
HUB_HOST = "huggingface.co"
HUB_CHECK_TIMEOUT_S = 3.0

#: Linear layers LoRA adapts: qkv, the attention output projection, fc1 and fc2 of every block.
#: transformers renamed them across versions, so both spellings are listed and matched by suffix.
LORA_TARGET_SUFFIXES = (
    "attention.q_proj",
    "attention.k_proj",
    "attention.v_proj",
    "attention.o_proj",
    "attention.attention.query",
    "attention.attention.key",
    "attention.attention.value",
    "attention.output.dense",
    "mlp.fc1",
    "mlp.fc2",
    "mlp.weights_in",
    "mlp.weights_out",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def dinov2_config(size: str, **overrides):
    """The ``Dinov2Config`` of a released size (image_size 518: the 37x37 position grid)."""
    Dinov2Config = require("transformers", "the DINOv2 encoder").Dinov2Config

    if size not in ARCHITECTURES:
        raise CheckpointError(
            f"unknown DINOv2 size {size!r}; choose one of {', '.join(ARCHITECTURES)}"
        )
    params = {
        "patch_size": PATCH_SIZE,
        "image_size": 518,
        "mlp_ratio": 4,
        "layer_norm_eps": 1e-6,
        "layerscale_value": 1.0,
    }
    params.update(ARCHITECTURES[size])
    params.update(overrides)
    return Dinov2Config(**params)


def voxssl_home() -> Path:
    return Path(os.environ.get("VOXSSL_HOME", Path.home() / ".cache" / "voxssl")).expanduser()


def cached_weights_dir(size: str) -> Path:
    return voxssl_home() / "dinov2" / size


def _checked(model_and_info, where: Path) -> Dinov2Model:
    """Reject a checkpoint that leaves weights missing (randomly initialised) or has extra ones."""
    model, info = model_and_info
    missing = sorted(k for k in info.get("missing_keys", ()) if k != "embeddings.mask_token")
    unexpected = sorted(info.get("unexpected_keys", ()))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{where}: does not match the DINOv2 architecture (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shape {mismatched[:3]})"
        )
    return model


def _from_folder(folder: Path) -> Dinov2Model:
    Dinov2Model = require("transformers", "the DINOv2 encoder").Dinov2Model

    if not (folder / "config.json").is_file():
        # a voxssl release, checkpoint or `voxssl dinov2 pretrain` run folder

        try:
            return _from_voxssl(weights_in_folder(folder))
        except VoxsslError as err:
            raise CheckpointError(
                f"{folder}: neither a Hugging Face-format DINOv2 folder (no config.json) nor a "
                f"voxssl weights folder ({err})"
            ) from None
    import pickle

    try:
        loaded = Dinov2Model.from_pretrained(
            str(folder), local_files_only=True, output_loading_info=True
        )
    except pickle.UnpicklingError:
        # torch.load(weights_only=True) met a pickle that needs code to run: refused, never run
        pickled = ", ".join(p.name for p in sorted(folder.glob("*.bin"))) or "a pickle file"
        raise CheckpointError(
            f"{folder}: {pickled} is a pickle that needs code execution to load, which voxssl "
            "refuses; use the published model.safetensors, or, only if you trust the file, convert "
            "it (torch.load(..., weights_only=False), then safetensors.torch.save_file)"
        ) from None
    except (OSError, ValueError) as err:
        reason = " ".join(str(err).split())
        raise CheckpointError(f"{folder}: cannot load DINOv2 weights: {reason}") from None
    return _checked(loaded, folder)


def _from_safetensors(path: Path, size: str) -> Dinov2Model:
    """A bare safetensors state dict (hub key names; a ``dinov2.``/``backbone.`` prefix is accepted).

    The architecture is the released ``size``, or the ``config.json`` beside the file when there is
    one. Loading goes through ``from_pretrained`` so that transformers' key renaming applies.
    """
    from safetensors.torch import load_file

    transformers = require("transformers", "the DINOv2 encoder")
    Dinov2Config, Dinov2Model = transformers.Dinov2Config, transformers.Dinov2Model

    if has_voxssl_plan(path):
        return _from_voxssl(path)
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    for prefix in ("dinov2.", "backbone.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    beside = path.parent / "config.json"
    config = Dinov2Config.from_json_file(str(beside)) if beside.is_file() else dinov2_config(size)
    try:
        loaded = Dinov2Model.from_pretrained(
            None, config=config, state_dict=state, output_loading_info=True
        )
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"{path}: does not match the DINOv2 architecture (size {size!r}): {err}"
        ) from None
    return _checked(loaded, path)


def _from_voxssl(path: Path) -> Dinov2Model:
    """voxssl ViT weights (a plan with a DINOv2 architecture): an encoder, a continued-pretraining
    checkpoint (its EMA teacher) or a classifier's backbone (:mod:`voxssl.models.vit`)."""

    model, plan = load_vit(path)
    log.info("DINOv2 encoder from %s (%s, width %d)", path, plan.kind, model.config.hidden_size)
    return model


def load_dinov2(size: str, weights: Path | None = None, pretrained: bool = True) -> Dinov2Model:
    """Build DINOv2-``size`` and load its weights from ``weights``, the cache, or the hub."""
    Dinov2Model = require("transformers", "the DINOv2 encoder").Dinov2Model

    if not pretrained:
        return Dinov2Model(dinov2_config(size))
    if weights is not None:
        weights = Path(weights).expanduser()
        if weights.is_dir():
            return _from_folder(weights)
        if weights.is_file() and weights.suffix == ".safetensors":
            return _from_safetensors(weights, size)
        raise CheckpointError(
            f"encoder.weights: {weights} is neither a .safetensors file nor a model folder"
        )
    cached = cached_weights_dir(size)
    if (cached / "config.json").is_file():
        return _from_folder(cached)
    return _from_hub(size, cached)


def hub_offline_reason() -> str | None:
    """Why the hub cannot be used right now (offline flag, no route), or None.

    Checked up front so that an offline machine gets the error at once instead of after the hub
    client's retries.
    """
    import socket

    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(flag, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{flag} is set"
    try:
        socket.create_connection((HUB_HOST, 443), timeout=HUB_CHECK_TIMEOUT_S).close()
    except OSError as err:
        return f"{HUB_HOST} unreachable: {err}"
    return None


def _from_hub(size: str, target: Path) -> Dinov2Model:
    Dinov2Model = require("transformers", "the DINOv2 encoder").Dinov2Model

    hub_id = HUB_IDS[size]
    hint = (
        f"Download them on a machine with internet (e.g. `huggingface-cli download {hub_id} --local-dir "
        f"{target}`) and copy the folder to {target}, or set fewshot.encoder.weights to a local "
        f".safetensors file or model folder."
    )
    reason = hub_offline_reason()
    if reason is None:
        try:
            model = Dinov2Model.from_pretrained(hub_id)
        except OSError as err:
            reason = str(err).splitlines()[0]
    if reason is not None:
        raise CheckpointError(
            f"DINOv2-{size} weights not found: no encoder.weights given, nothing in {target}, and the hub "
            f"({hub_id}) cannot be used ({reason}). {hint}"
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    model.save_pretrained(str(tmp))
    os.replace(tmp, target)
    log.info("cached DINOv2-%s weights in %s", size, target)
    return model


def lora_target_modules(model: nn.Module) -> list[str]:
    """Names of the Linear layers LoRA adapts, as found in ``model`` (raises if none match)."""
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.endswith(LORA_TARGET_SUFFIXES)
    ]
    if not names:
        raise CheckpointError(
            "no DINOv2 attention/MLP Linear layers found for LoRA (transformers version?)"
        )
    return names


def apply_lora(model: Dinov2Model, rank: int, alpha: float, dropout: float = 0.0) -> Dinov2Model:
    """Freeze ``model`` and add LoRA adapters (peft) to qkv, proj, fc1, fc2 of every block."""
    peft = require("peft", "LoRA on the DINOv2 encoder")
    LoraConfig, inject_adapter_in_model = peft.LoraConfig, peft.inject_adapter_in_model

    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=lora_target_modules(model)
    )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    model = inject_adapter_in_model(config, model)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_("lora_" in name)
    return model


def lora_parameter_count(model: nn.Module, rank: int) -> int:
    """Exact LoRA parameter count, ``r (in + out)`` per adapted Linear layer (before or after injection)."""
    total = 0
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", module)
        if isinstance(base, nn.Linear) and name.endswith(LORA_TARGET_SUFFIXES):
            total += rank * (base.in_features + base.out_features)
    return total


class DinoV2Features(nn.Module):
    """Last-layer normalised patch tokens (no CLS, no registers) as a (N, D, h, w) map."""

    def __init__(self, model: Dinov2Model) -> None:
        super().__init__()
        self.model = model
        self.out_channels = int(model.config.hidden_size)
        self.patch_size = vit_patch_size(model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        patch = self.patch_size
        if height % patch or width % patch:
            raise ValueError(f"DINOv2 input must be a multiple of {patch}, got {height}x{width}")
        tokens = self.model(pixel_values=images).last_hidden_state  # layernorm applied
        grid_h, grid_w = height // patch, width // patch
        patches = tokens[:, -grid_h * grid_w :]  # drop CLS (and any register tokens)
        return patches.transpose(1, 2).reshape(n, self.out_channels, grid_h, grid_w)


__all__ = [
    "ARCHITECTURES",
    "PATCH_SIZE",
    "DinoV2Features",
    "apply_lora",
    "cached_weights_dir",
    "dinov2_config",
    "load_dinov2",
    "lora_parameter_count",
    "lora_target_modules",
]
