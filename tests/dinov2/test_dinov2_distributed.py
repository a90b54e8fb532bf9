"""DINOv2 training under real torchrun with 2 CPU (gloo) ranks: distributed Sinkhorn-Knopp and
centering equal one process, and the ranks keep identical students, teachers and centers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.multiprocess

SCRIPT = Path(__file__).with_name("ddp_dinov2_script.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_agree(dinov2_recipe, tmp_path):
    path = dinov2_recipe("ddp", steps=2, optim={"batch_size": 2})
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        str(SCRIPT),
        str(path),
        str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
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
