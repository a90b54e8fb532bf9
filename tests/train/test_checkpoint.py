"""Checkpoint folders are atomic, pruned, and readable with weights_only unpickling."""

from __future__ import annotations

import pytest
import torch

from voxssl.checkpoint_layout import (
    MODEL_FILE,
    STATE_FILE,
    checkpoint_root,
    latest_checkpoint,
    list_checkpoints,
)
from voxssl.errors import CheckpointError
from voxssl.train.checkpoint import (
    TrainingState,
    check_fingerprint,
    load_state,
    save_checkpoint,
)
from voxssl.training import rng_state


def _state(step: int) -> TrainingState:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return TrainingState(
        step=step,
        optimizer=optimizer.state_dict(),
        rng=rng_state(),
        sampler={"seed": 1, "next_step": step},
        fingerprint={"pretrain": {"lr": 1.0}},
    )


def _write_model(path):
    path.write_bytes(b"weights")


def test_save_keeps_the_newest_and_loads_weights_only(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, _state(step), _write_model, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 6]
    latest = latest_checkpoint(tmp_path)
    state = torch.load(latest / STATE_FILE, weights_only=True)
    assert state["step"] == 6 and state["sampler"]["next_step"] == 6
    assert load_state(latest)["optimizer"]["state"][0]["exp_avg"].shape == (2, 3)


def test_a_failed_save_leaves_no_folder_and_leftovers_are_ignored(tmp_path):
    save_checkpoint(tmp_path, _state(2), _write_model)

    def broken(path):
        path.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_checkpoint(tmp_path, _state(4), broken)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2]
    root = checkpoint_root(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["step_0000002"]
    (root / "step_0000009").mkdir()  # incomplete (no files): never taken for a checkpoint
    (root / "step_0000009" / MODEL_FILE).write_bytes(b"x")
    assert latest_checkpoint(tmp_path).name == "step_0000002"


def test_unreadable_state_and_changed_fingerprint(tmp_path):
    folder = tmp_path / "step_0000001"
    folder.mkdir()
    (folder / STATE_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_state(folder)
    with pytest.raises(CheckpointError, match=r"pretrain\.lr"):
        check_fingerprint({"pretrain": {"lr": 1.0}}, {"pretrain": {"lr": 2.0}}, folder)
    check_fingerprint({"pretrain": {"lr": 1.0}}, {"pretrain": {"lr": 1.0}}, folder)
