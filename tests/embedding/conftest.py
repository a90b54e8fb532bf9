"""Tiny weights and a phantom pair for the embedding, explore and one-shot tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

#: A small phantom grid (the default field of view at 8 x 8 x 12 mm).
SHAPE, SPACING = (50, 40, 20), (8.0, 8.0, 12.0)
#: Scan B is scan A moved by this much in the scanner (and stored in another orientation).
SHIFT_MM = np.array([30.0, -20.0, 48.0])


def tiny_weights(path: Path, spacing=(8.0, 8.0, 12.0), seed: int = 0) -> Path:
    """A random-init 3-level hierarchical backbone (12-d embedding) with a CT plan."""
    from voxssl.config.data import CTPreprocessConfig, PreprocessConfig
    from voxssl.config.model import ModelConfig
    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan, preprocessing_plan
    from voxssl.models.weights import save_weights

    config = ModelConfig(
        preset="hierarchical", base_channels=4, num_levels=3, projection_channels=4
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(config)
    preprocess = PreprocessConfig(ct=CTPreprocessConfig(spacing=tuple(spacing)))
    plan = Plan.for_model(config, preprocessing=preprocessing_plan("ct", preprocess))
    return save_weights(path, backbone.state_dict(), plan)


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    return tiny_weights(tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture(scope="session")
def phantom_pair(tmp_path_factory):
    """(scan A, scan B, label A, landmarks A): B is A shifted by SHIFT_MM and stored LPS."""
    from voxssl.data.phantoms import generate_phantom, write_phantom

    folder = tmp_path_factory.mktemp("pair")
    phantom = generate_phantom(3, "ct", SHAPE, SPACING)
    write_phantom(phantom, folder / "a.nii.gz", folder / "a_label.nii.gz", "RAS", folder / "a.json")
    phantom.affine = phantom.affine.copy()
    phantom.affine[:3, 3] += SHIFT_MM
    write_phantom(phantom, folder / "b.nii.gz", folder / "b_label.nii.gz", "LPS")
    return folder / "a.nii.gz", folder / "b.nii.gz", folder / "a_label.nii.gz", folder / "a.json"


def nifti_array(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)
