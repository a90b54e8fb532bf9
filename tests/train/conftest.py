"""A tiny preprocessed cache of generated CT phantoms and a tiny pretraining recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from voxssl.data.cache import case_key, empty_manifest, write_case, write_manifest
from voxssl.data.phantoms.generate import generate_phantom

WINDOW_HU = (-1350.0, 1000.0)
PHANTOM_SHAPE = (40, 32, 16)


def write_phantom_cache(
    cache_dir: Path, count: int = 3, shape: tuple[int, int, int] = PHANTOM_SHAPE
) -> Path:
    """``count`` CT phantoms scaled to [0, 1] like the CT preprocessing, body = above -500 HU."""
    manifest = empty_manifest()
    for seed in range(count):
        phantom = generate_phantom(seed, "ct", shape=shape)
        low, high = WINDOW_HU
        image = np.clip((phantom.image - low) / (high - low), 0, 1).astype(np.float32)
        body = phantom.image > -500
        case_id = f"phantom_{seed:03d}"
        meta = {
            "case_id": case_id,
            "source": "phantoms",
            "modality": "ct",
            "spacing": list(phantom.spacing),
            "shape": list(image.shape),
            "num_channels": 1,
            "directory": f"phantoms/{case_id}",
        }
        meta = write_case(cache_dir / "phantoms" / case_id, image, None, body, meta)
        manifest["cases"][case_key("phantoms", case_id)] = meta
    write_manifest(cache_dir, manifest)
    return cache_dir


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory) -> Path:
    return write_phantom_cache(tmp_path_factory.mktemp("phantom_cache"))


def tiny_recipe_dict(cache_dir: Path, output_dir: Path, **pretrain) -> dict:
    """A model and patches small enough for a few CPU steps per second."""
    return {
        "name": "tiny",
        "seed": 3,
        "output_dir": str(output_dir),
        "data": {"cache_dir": str(cache_dir)},
        "model": {
            "preset": "hierarchical",
            "base_channels": 4,
            "num_levels": 3,
            "projection_channels": 4,
            "projector_out": 16,
        },
        "pretrain": {
            "steps": 4,
            "pairs_per_step": 2,
            "pairs_per_volume": 1,
            "patch_size": [16, 16, 8],
            "positives_per_pair": 64,
            "num_workers": 0,
            "checkpoint_every": 2,
            "log_every": 1,
            "image_every": 2,
            "local": {"shuffle_blocks": 50},
            **pretrain,
        },
    }


@pytest.fixture
def tiny_recipe(phantom_cache, tmp_path):
    """``tiny_recipe(**pretrain_overrides) -> Path`` of a YAML recipe in a fresh folder."""
    from voxssl.config.recipe import load_recipe

    def make(name: str = "tiny", **pretrain):
        data = tiny_recipe_dict(phantom_cache, tmp_path / "runs", **pretrain)
        data["name"] = name
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    make.load = lambda path, overrides=(): load_recipe(path, list(overrides))  # type: ignore[attr-defined]
    return make
