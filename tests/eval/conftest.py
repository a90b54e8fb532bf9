"""A tiny labelled phantom cache shared by the end-to-end downstream tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

PHANTOM_SHAPE = (64, 48, 16)
NUM_PHANTOMS = 4

TINY_RECIPE = {
    "name": "probe",
    "seed": 0,
    "preprocess": {"ct": {"spacing": [6.25, 6.25, 15.0]}},
    "model": {
        "preset": "hierarchical",
        "base_channels": 4,
        "num_levels": 3,
        "projection_channels": 4,
    },
    "probe": {
        "classes": ["liver", "spleen", "right_kidney", "left_kidney"],
        "patch_size": [64, 48, 16],  # the whole preprocessed phantom: one inference window
        "batch_size": 2,
        "steps": 4,
        "lr": 0.01,
        "log_every": 2,
        "overlay_slices": 2,
        "cv": {"scheme": "kfold", "k": 2, "seed": 0},
    },
}


def write_phantoms(root: Path, count: int = NUM_PHANTOMS, shape=PHANTOM_SHAPE) -> Path:
    from voxssl.data.phantoms.generate import generate_phantom

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for seed in range(count):
        phantom = generate_phantom(seed, "ct", shape=shape)
        nib.save(
            nib.Nifti1Image(phantom.image.astype(np.int16), phantom.affine),
            str(root / "images" / f"ph{seed:03d}.nii.gz"),
        )
        nib.save(
            nib.Nifti1Image(phantom.label, phantom.affine),
            str(root / "labels" / f"ph{seed:03d}.nii.gz"),
        )
    return root


def write_recipe(folder: Path, data_root: Path, cache_dir: Path, **changes) -> Path:
    recipe = {
        **TINY_RECIPE,
        "output_dir": str(folder / "runs"),
        "data": {
            "cache_dir": str(cache_dir),
            "num_workers": 1,
            "sources": [
                {
                    "adapter": "folder",
                    "name": "phantoms",
                    "root": str(data_root),
                    "modality": "ct",
                    "options": {"images": "images", "labels": "labels"},
                }
            ],
        },
    }
    recipe.update(changes)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def phantom_cache(tmp_path_factory):
    """(folder with phantoms, recipe path, cache dir) of a preprocessed 4-phantom data set."""
    from voxssl.config.recipe import load_recipe
    from voxssl.data.pipeline import run_preprocess

    folder = tmp_path_factory.mktemp("phantom_probe")
    data_root = write_phantoms(folder / "phantoms")
    recipe_path = write_recipe(folder, data_root, folder / "cache")
    summary = run_preprocess(load_recipe(recipe_path), progress=False)
    assert summary.ok
    return folder, recipe_path, folder / "cache"
