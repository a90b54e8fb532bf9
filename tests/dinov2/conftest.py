"""Tiny DINOv2 recipes on the session's phantom slice cache (tests/conftest.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

TINY_VIT = {
    "pretrained": False,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "patch_size": 8,
    "drop_path_rate": 0.1,
}


def tiny_dinov2_section(steps: int = 4, **changes) -> dict:
    """A ViT 32 wide and 2 deep on 32 px global crops: a few CPU steps per second. ``changes``
    update the sub-sections (``vit`` is replaced as a whole)."""
    section = {
        "vit": dict(TINY_VIT),
        "dino_head": {"num_prototypes": 64, "hidden_dim": 32, "bottleneck_dim": 16},
        "optim": {"steps": steps, "batch_size": 4, "warmup_steps": 2, "freeze_last_layer_steps": 1},
        "teacher": {"temperature_warmup_steps": 2},
        "crops": {"global_size": 32, "local_size": 16, "local_number": 2},
        "num_workers": 0,
        "checkpoint_every": 2,
        "log_every": 1,
        "image_every": 2,
    }
    for key, value in changes.items():
        if key != "vit" and isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    return section


@pytest.fixture
def dinov2_recipe(phantom_slice_cache, tmp_path):
    """``dinov2_recipe(name, **section_changes) -> Path`` of a recipe YAML in a fresh folder."""

    def make(name: str = "dino", steps: int = 4, **changes) -> Path:
        data = copy.deepcopy(phantom_slice_cache["data"])
        data.update(
            name=name,
            seed=1,
            output_dir=str(tmp_path / "runs"),
            dinov2=tiny_dinov2_section(steps, **changes),
        )
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return make
