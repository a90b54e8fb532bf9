"""A tiny DINOv2 encoder on disk and classification recipes on the phantom slice cache."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A randomly initialised ViT (32 wide, 2 deep, 8 px patches) as a Hugging Face folder."""
    import torch
    from transformers import Dinov2Model

    from voxssl.fewshot.dinov2 import dinov2_config

    torch.manual_seed(0)
    model = Dinov2Model(
        dinov2_config(
            "small",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            patch_size=8,
            image_size=32,
        )
    )
    folder = tmp_path_factory.mktemp("tiny_vit")
    model.save_pretrained(str(folder))
    return folder


@pytest.fixture
def classify_recipe(phantom_slice_cache, tmp_path):
    """``classify_recipe(name, **classify_changes) -> Path``: 3 folds, 2 epochs, 32 px inputs."""

    def make(name: str = "cls", **changes) -> Path:
        data = copy.deepcopy(phantom_slice_cache["data"])
        section = {
            "mode": "linear_probe",
            "image_size": 32,
            "epochs": 2,
            "batch_size": 16,
            "lr": 1.0e-3,
            "num_workers": 0,
            "device": "cpu",
            "cv": {"k": 3, "val_fraction": 0.34},
            "data": {"kind": "cache", "task": "contains", "organs": ["liver"]},
        }
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(section.get(key), dict):
                section[key] = {**section[key], **value}
            else:
                section[key] = value
        data.update(name=name, seed=0, output_dir=str(tmp_path / "runs"), classify=section)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return make
