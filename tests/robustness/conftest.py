"""Tiny segmentation weights (random backbone + a head that paints organs) and scans for predict."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

TINY_MODEL = {"preset": "vox2vec", "base_channels": 4, "num_levels": 3}


def make_segmentation_weights(
    path: Path,
    modality: str = "ct",
    spacing=(4.0, 4.0, 4.0),
    roi=(16, 16, 16),
    classes=(1, 6),
    loss: str = "ce",
    body_restricted: bool = False,
    seed: int = 0,
) -> Path:
    """A segmentation model file as linear-probe writes it, with random weights (seeded)."""
    from voxssl.config.data import PreprocessConfig
    from voxssl.config.model import model_config_from_dict
    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan, preprocessing_plan
    from voxssl.models.segmentation import SegmentationModel
    from voxssl.models.segmentation_weights import SegmentationSpec, save_segmentation_weights

    torch.manual_seed(seed)
    config = model_config_from_dict(TINY_MODEL)
    backbone = build_backbone(config).eval()
    preprocess = PreprocessConfig()
    getattr(preprocess, modality).spacing = tuple(float(s) for s in spacing)
    plan = Plan.for_model(config, preprocessing=preprocessing_plan(modality, preprocess))
    spec = SegmentationSpec(
        classes=list(classes),
        head_kind="linear",
        head_in_channels=list(backbone.level_channels),
        head_hidden=8,
        head_blocks_per_level=1,
        loss=loss,
        threshold=0.5,
        sw_roi_size=list(roi),
        sw_overlap=0.5,
        sw_mode="gaussian",
        body_restricted=body_restricted,
    )
    head = spec.build_head()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # strong random weights: every class wins somewhere
        for parameter in head.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 3)
    model = SegmentationModel(backbone, head, loss_kind=loss)
    return save_segmentation_weights(path, model, spec, plan)


@pytest.fixture(scope="session")
def ct_weights(tmp_path_factory) -> Path:
    # seed 1: organ 1 inside the body and in some of the air, background elsewhere
    return make_segmentation_weights(
        tmp_path_factory.mktemp("ct_weights") / "model.safetensors", seed=1
    )


def write_ct(path: Path, shape=(40, 36, 20), spacing=(4.0, 4.0, 4.0), seed=0, affine=None) -> Path:
    """A CT-like scan: an elliptic body (soft tissue with noise) in air, int16 HU."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    body = (grid[0] ** 2 / 0.7 + grid[1] ** 2 / 0.6) < 1
    image = np.where(body, rng.normal(40, 30, shape), -1000 + rng.normal(0, 5, shape))
    if affine is None:
        affine = np.diag([*spacing, 1.0])
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), path)
    return path
