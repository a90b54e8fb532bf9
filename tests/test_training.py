"""voxssl.training: the one optimizer step, run log and state files every training loop uses."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from voxssl.errors import CheckpointError
from voxssl.training import (
    RunLogger,
    check_finite,
    load_state,
    optimizer_step,
    restore_rng_state,
    rng_state,
    save_state,
)


def _model_and_loss(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    x = torch.randn(8, 4)
    return model, lambda m: (m(x) ** 2).sum() * 10  # large gradients: clipping bites


@pytest.mark.parametrize("max_norm", [0.0, 0.5])
def test_step_equals_the_textbook_step(max_norm):
    model, loss_of = _model_and_loss()
    reference = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        norms = optimizer_step(loss_of(model), optimizer, max_norm)
        # the reference, written out: backward, global L2 norm, scale when above max_norm, step
        ref_optimizer.zero_grad()
        loss_of(reference).backward()
        grads = [p.grad for p in reference.parameters()]
        total = math.sqrt(sum(float((g**2).sum()) for g in grads))
        if max_norm > 0:
            scale = min(1.0, max_norm / (total + 1e-6))
            for g in grads:
                g.mul_(scale)
            assert norms == {"all": pytest.approx(total, rel=1e-5)}
        else:
            assert norms == {}
        ref_optimizer.step()
        for p, q in zip(model.parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p, q)


def test_parts_are_clipped_separately_and_norms_reported():
    model, loss_of = _model_and_loss(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: look at the gradients only
    norms = optimizer_step(
        loss_of(model),
        optimizer,
        0.25,
        parts={"a": model[0].parameters(), "b": model[2].parameters()},
    )
    assert set(norms) == {"a", "b"} and all(n > 0.25 for n in norms.values())
    for part in (model[0], model[2]):
        clipped = math.sqrt(sum(float((p.grad**2).sum()) for p in part.parameters()))
        assert clipped == pytest.approx(0.25, rel=1e-4)
    unclipped = optimizer_step(loss_of(model), optimizer, report_norm=True)
    assert unclipped["all"] == pytest.approx(math.hypot(norms["a"], norms["b"]), rel=1e-5)


def test_check_finite_names_the_step_and_the_hint():
    check_finite(1.5, 3, "x")
    with pytest.raises(FloatingPointError, match=r"the loss is nan at step 7; lower lr"):
        check_finite(float("nan"), 7, "lower lr")


def test_run_logger_writes_tensorboard_and_a_disabled_one_writes_nothing(tmp_path):
    with RunLogger(tmp_path / "tb", total_steps=3, description="t", progress=False) as logger:
        for step in (1, 2, 3):
            logger.scalars(step, {"loss/total": 1.0 / step})
        logger.image(3, "views/slice", torch.rand(3, 4, 5))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.value for e in events.Scalars("loss/total")] == pytest.approx([1.0, 0.5, 1 / 3])
    assert events.Tags()["images"] == ["views/slice"]
    silent = RunLogger(tmp_path / "rank1", total_steps=3, enabled=False)
    silent.scalars(1, {"loss/total": 1.0})
    silent.close()
    assert not (tmp_path / "rank1").exists()


def test_state_roundtrip_atomic_and_weights_only(tmp_path):
    path = tmp_path / "state.pt"
    torch.manual_seed(5)
    save_state(path, {"step": 4, "rng": rng_state(), "w": torch.arange(3)})
    expected = torch.rand(2)
    state = load_state(path)
    assert state["step"] == 4 and torch.equal(state["w"], torch.arange(3))
    restore_rng_state(state["rng"])
    assert torch.equal(torch.rand(2), expected)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left

    class Payload:  # unpickling it would run code: refused
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Payload()}))
    with pytest.raises(CheckpointError, match=r"evil\.pt is not a voxssl state file.*; delete it$"):
        load_state(tmp_path / "evil.pt", hint="delete it")
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"cut\.pt is unreadable \([^\n]*\)$"):
        load_state(tmp_path / "cut.pt")
    with pytest.raises(CheckpointError, match=r"training state .*absent\.pt not found"):
        load_state(tmp_path / "absent.pt")
