"""Two CPU processes through real torchrun (gloo): the ranks stay in sync."""

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

SCRIPT = Path(__file__).with_name("ddp_pretrain_script.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_keep_identical_weights(tiny_recipe, tmp_path):
    path = tiny_recipe(
        "ddp", steps=3, gather_negatives_across_ranks=True, equivariance={"weight": 0.5}
    )
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
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys() and weights[0]
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], rtol=0, atol=0, msg=name)
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]
    assert logs[0]["losses"] == logs[1]["losses"]  # all-reduced
    assert len(logs[0]["losses"]) == 3
    # Only rank 0 writes the run folder.
    run_dir = tmp_path / "runs" / "ddp"
    assert (run_dir / "backbone.safetensors").is_file()
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
