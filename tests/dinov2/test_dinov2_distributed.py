"""DINOv2 training under real torchrun with 2 CPU (gloo) ranks: distributed Sinkhorn-Knopp and
centering equal one process, and the ranks keep identical students, teachers and centers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).with_name("ddp_dinov2_script.py")


def test_two_ranks_agree(dinov2_recipe, tmp_path, torchrun):
    path = dinov2_recipe("ddp", steps=2, optim={"batch_size": 2})
    done = torchrun(SCRIPT, path, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    logs = [json.loads((tmp_path / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    for log in logs:
        assert log["checks"]["sinkhorn_max_error"] < 1e-6
        assert log["checks"]["center_max_error"] < 1e-6
    assert logs[0]["losses"] == logs[1]["losses"] and len(logs[0]["losses"]) == 2
    states = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert states[0].keys() == states[1].keys()
    assert {k.split(".")[0] for k in states[0]} == {
        "student",
        "teacher",
        "dino_center",
        "ibot_center",
    }
    for name in states[0]:
        torch.testing.assert_close(states[0][name], states[1][name], rtol=0, atol=0, msg=name)
    run_dir = tmp_path / "runs" / "ddp"  # only rank 0 writes the run folder
    assert (run_dir / "encoder.safetensors").is_file()
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
