"""Resuming reproduces the uninterrupted loss curve exactly (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch

from voxssl.checkpoint_layout import latest_checkpoint
from voxssl.errors import CheckpointError, ConfigError
from voxssl.train.checkpoint import load_state
from voxssl.train.loop import pretrain

STEPS = 5


def _uninterrupted(tiny_recipe, **pretrain_cfg):
    return pretrain(
        tiny_recipe.load(tiny_recipe("full", steps=STEPS, **pretrain_cfg)), progress=False
    )


def test_stop_then_resume_with_more_steps_equals_one_run(tiny_recipe):
    full = _uninterrupted(tiny_recipe)
    path = tiny_recipe("split", steps=STEPS)
    first = pretrain(
        tiny_recipe.load(path, ["pretrain.steps=3"]), progress=False
    )  # ends with a checkpoint at 3
    assert first.backbone_path is not None
    second = pretrain(tiny_recipe.load(path), resume=True, progress=False)
    assert second.start_step == 3 and sorted(second.losses) == [4, 5]
    curve = {**first.losses, **second.losses}
    assert curve == full.losses  # bit-identical
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(second.model.state_dict()[key], value, rtol=0, atol=0)


@pytest.mark.multiprocess
def test_crash_between_checkpoints_then_resume_equals_one_run(tiny_recipe):
    # Two data workers: batches must not depend on which worker draws them.
    full = _uninterrupted(tiny_recipe, num_workers=2)
    path = tiny_recipe("crash", steps=STEPS, num_workers=2)
    crashed = pretrain(
        tiny_recipe.load(path), progress=False, stop_after=3
    )  # checkpoint at 2, none at 3
    assert crashed.backbone_path is None
    assert load_state(latest_checkpoint(crashed.run_dir))["step"] == 2
    resumed = pretrain(tiny_recipe.load(path), resume=True, progress=False)
    assert resumed.start_step == 2
    assert {**{s: crashed.losses[s] for s in (1, 2)}, **resumed.losses} == full.losses


def test_resume_refuses_changed_training_settings(tiny_recipe):
    path = tiny_recipe("changed", steps=2)
    pretrain(tiny_recipe.load(path), progress=False)
    with pytest.raises(CheckpointError, match=r"pretrain\.lr"):
        pretrain(
            tiny_recipe.load(path, ["pretrain.steps=4", "pretrain.lr=0.1"]),
            resume=True,
            progress=False,
        )
    with pytest.raises(ConfigError, match="--resume"):
        pretrain(tiny_recipe.load(path, ["pretrain.steps=4"]), progress=False)
    with pytest.raises(ConfigError, match="already at step 2"):
        pretrain(tiny_recipe.load(path), resume=True, progress=False)


def test_resume_without_checkpoint_is_an_error(tiny_recipe):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        pretrain(tiny_recipe.load(tiny_recipe("fresh")), resume=True, progress=False)
