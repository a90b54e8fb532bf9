"""A tiny preprocessed cache of synthetic phantoms, built once per session through the real pipeline."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

PHANTOM_SHAPE = (64, 52, 24)  # 6.25 x 6.25 x 10 mm voxels over the default field of view
NUM_PHANTOMS = 6  # 5 folds + 1 support scan


def write_phantoms(folder: Path, count: int = NUM_PHANTOMS) -> Path:
    from voxssl.data.phantoms.generate import generate_phantom

    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        phantom = generate_phantom(seed, "ct", shape=PHANTOM_SHAPE)
        nib.save(
            nib.Nifti1Image(phantom.image.astype(np.int16), phantom.affine),
            folder / "images" / f"p{seed:02d}.nii.gz",
        )
        nib.save(
            nib.Nifti1Image(phantom.label, phantom.affine),
            folder / "labels" / f"p{seed:02d}.nii.gz",
        )
    return folder


def fewshot_recipe_dict(root: Path, cache: Path, runs: Path) -> dict:
    """The demo recipe's shape, shrunk for a test: tiny CNN, 64 x 64 slices, few steps."""
    return {
        "name": "fewshot-test",
        "output_dir": str(runs),
        "data": {
            "cache_dir": str(cache),
            "num_workers": 1,
            "sources": [
                {
                    "adapter": "folder",
                    "name": "phantoms",
                    "root": str(root),
                    "modality": "ct",
                    "options": {"images": "images", "labels": "labels"},
                }
            ],
        },
        "preprocess": {"ct": {"spacing": [6.25, 6.25, 10.0]}},
        "fewshot": {
            "encoder": {"type": "cnn", "cnn_channels": [8, 16], "normalise_imagenet": False},
            "image_size": 64,
            "eval_image_size": 64,
            "superpixels": {"min_size": 40, "num_workers": 1},
            "alp": {"feature_grid": 16, "eval_feature_grid": 16},
            "optim": {"steps": 40, "lr": 0.01, "log_every": 20, "checkpoint_every": 0},
            "eval": {
                "setting": 2,
                "organ_groups": [["left_kidney", "right_kidney"], ["spleen", "liver"]],
            },
            "device": "cpu",
        },
    }


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory) -> dict:
    """{'recipe': Recipe, 'cache_dir': Path, 'root': Path} for a 6-phantom cache."""
    from voxssl.config.recipe import recipe_from_dict
    from voxssl.data.pipeline import run_preprocess

    base = tmp_path_factory.mktemp("fewshot")
    root = write_phantoms(base / "phantoms")
    data = fewshot_recipe_dict(root, base / "cache", base / "runs")
    recipe = recipe_from_dict(data, source="<test recipe>")
    summary = run_preprocess(recipe, progress=False)
    assert summary.ok, summary.describe()
    return {"recipe": recipe, "cache_dir": base / "cache", "root": root, "data": data}
