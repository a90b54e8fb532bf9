"""Where a training run (``output_dir/name``) keeps its checkpoints: what the training loops
write and what ``--weights RUN_FOLDER`` reads::

    <run>/recipe.resolved.yaml
    <run>/checkpoints/step_<k>/model.safetensors   every weight, with the plan (voxssl.models.weights)
    <run>/checkpoints/step_<k>/state.pt            what resuming needs (voxssl.train.checkpoint)

A ``step_<k>`` folder is complete or absent (it is written under a temporary name and renamed).
"""

from __future__ import annotations

import re
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
STATE_FILE = "state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def step_dir_name(step: int) -> str:
    return f"step_{step:07d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, folder)``, oldest first."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / MODEL_FILE).is_file() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


__all__ = [
    "CHECKPOINT_DIR",
    "MODEL_FILE",
    "STATE_FILE",
    "checkpoint_root",
    "latest_checkpoint",
    "list_checkpoints",
    "step_dir_name",
]
