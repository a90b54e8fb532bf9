"""A tiny preprocessed cache of generated CT phantoms and a tiny pretraining recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from voxssl.data.phantoms.cache import write_phantom_cache

PHANTOM_SHAPE = (40, 32, 16)


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory) -> Path:
    """3 CT phantoms scaled to [0, 1] like the CT preprocessing, body = above -500 HU."""
    return write_phantom_cache(tmp_path_factory.mktemp("phantom_cache"), 3, PHANTOM_SHAPE)


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
