"""Classification recipes on the phantom slice cache, with the tiny DINOv2 encoder of tests/conftest.py."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def tiny_encoder(tiny_dinov2_folder) -> Path:
    return tiny_dinov2_folder


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
