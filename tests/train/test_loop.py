"""End to end on phantoms: the loss goes down, the run folder holds what downstream needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxssl.errors import ConfigError, DataError
from voxssl.train.loop import BACKBONE_FILE, TENSORBOARD_DIR, pretrain


def test_tiny_run_lowers_the_loss_and_writes_the_run_folder(tiny_recipe):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from voxssl.models.weights import load_backbone

    recipe = tiny_recipe.load(
        tiny_recipe(
            steps=16, checkpoint_every=8, image_every=8, lr=2e-3, equivariance={"weight": 0.5}
        )
    )
    result = pretrain(recipe, progress=False)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert len(losses) == 16 and all(np.isfinite(losses))
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4]), losses
    assert set(result.terms[16]) == {"infonce", "reconstruction", "equivariance"}

    run_dir = recipe.run_dir
    assert (run_dir / "recipe.resolved.yaml").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_0000008",
        "step_0000016",
    ]
    backbone, plan = load_backbone(run_dir / BACKBONE_FILE, expect={"preprocessing.modality": "ct"})
    assert plan.kind == "backbone" and plan.extra["step"] == 16
    torch.testing.assert_close(
        backbone.state_dict()["first_conv.weight"],
        result.model.backbone.state_dict()["first_conv.weight"],
    )

    events = EventAccumulator(
        str(run_dir / TENSORBOARD_DIR), size_guidance={"scalars": 0, "images": 0}
    )
    events.Reload()
    tags = events.Tags()
    for tag in (
        "loss/total",
        "loss/infonce",
        "loss/reconstruction",
        "loss/equivariance",
        "train/lr",
        "perf/steps_per_s",
        "perf/data_wait_fraction",
    ):
        assert tag in tags["scalars"], tag
    logged = {e.step: e.value for e in events.Scalars("loss/total")}
    assert logged[16] == pytest.approx(result.losses[16], rel=1e-6)
    images = events.Images("views/slice")
    assert [i.step for i in images] == [8, 16]
    assert images[0].width == 3 * 16 and images[0].height == 16  # image | reconstruction | PCA


def test_vox2vec_preset_without_reconstruction(tiny_recipe):
    path = tiny_recipe("v2v", steps=2, reconstruction_weight=0.0, local={"enabled": False})
    recipe = tiny_recipe.load(
        path, ["model.preset=vox2vec", "model.projection=none", "model.reconstruction=none"]
    )
    result = pretrain(recipe, progress=False)
    assert set(result.terms[2]) == {"infonce"}


def test_missing_cache_points_to_preprocess_and_demo(tiny_recipe, tmp_path):
    recipe = tiny_recipe.load(tiny_recipe(), [f"data.cache_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(DataError, match=r"voxssl preprocess.*voxssl demo"):
        pretrain(recipe, progress=False)


def test_channel_mismatch_and_bf16_on_cpu_are_config_errors(tiny_recipe):
    with pytest.raises(ConfigError, match="in_channels"):
        pretrain(tiny_recipe.load(tiny_recipe(), ["model.in_channels=2"]), progress=False)
    with pytest.raises(ConfigError, match="bf16"):
        pretrain(tiny_recipe.load(tiny_recipe(amp="bf16")), progress=False)


def test_hu_augmentation_units_are_refused_for_mri(tiny_recipe):
    from voxssl.train.builders import build_view_generator

    recipe = tiny_recipe.load(tiny_recipe())
    with pytest.raises(ConfigError, match="units"):
        build_view_generator(recipe, recipe.pretrain, "mr")
    recipe = tiny_recipe.load(
        tiny_recipe(
            intensity={
                "units": "scaled",
                "noise_std": [0.0, 0.01],
                "window_low": [0.0, 0.1],
                "window_high": [0.7, 1.0],
            }
        )
    )
    assert len(build_view_generator(recipe, recipe.pretrain, "mr").augmentations) == 6
