"""Atomic pretraining checkpoints and ``--resume``.

A checkpoint is one folder ``<run_dir>/checkpoints/step_<k>/`` holding

- ``model.safetensors``: every weight of the pretraining model (backbone + projector +
  reconstruction head), with the plan in its metadata (:mod:`voxssl.models.weights`);
- ``state.pt``: what else resuming needs (optimizer state, step, torch RNG states, the sampler
  state and the recipe sections that must not change), tensors and plain data only, so
  ``torch.load(weights_only=True)`` reads it without running pickled code.

The folder is written under a temporary name and renamed into place, so a ``step_<k>`` folder is
always complete; a killed run leaves at most a ``.tmp-*`` folder that the next save removes.
Because step ``k``'s batch depends only on ``(seed, rank, k)``, the sampler state is just the
step, and a resumed run reproduces the uninterrupted loss curve.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxssl.errors import CheckpointError
from voxssl.run_folder import (
    MODEL_FILE,
    STATE_FILE,
    checkpoint_root,
    list_checkpoints,
    step_dir_name,
)

log = logging.getLogger(__name__)

STATE_FORMAT = 1

# Pretrain fields that may change between an interrupted run and its resumption (they do not
# change what step k computes).
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "num_workers",
        "prefetch_factor",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "image_every",
        "device",
        "deterministic",
        "cpu_threads",
    }
)


@dataclass
class TrainingState:
    step: int  # number of optimizer steps done; training resumes at this step
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    sampler: dict[str, Any]
    fingerprint: dict[str, Any]  # recipe sections that must match on resume

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "step": self.step,
            "optimizer": self.optimizer,
            "rng": self.rng,
            "sampler": self.sampler,
            "fingerprint": self.fingerprint,
        }


def rng_state() -> dict[str, Any]:
    """torch's CPU and CUDA generator states (the loop has no other random state)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, state: TrainingState, save_model: Callable[[Path], None], keep: int = 2
) -> Path:
    """Write ``step_<state.step>`` atomically; keep the ``keep`` newest step folders.

    ``save_model(path)`` writes the model's safetensors file at ``path``.
    """
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for leftover in root.glob(".tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    target = root / step_dir_name(state.step)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
    try:
        save_model(tmp / MODEL_FILE)
        torch.save(state.to_dict(), tmp / STATE_FILE)
        if target.exists():  # re-saving the same step (e.g. the final one after a resume)
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint saved: %s", target)
    return target


def load_state(folder: Path) -> dict[str, Any]:
    """``state.pt`` of a checkpoint folder (weights-only unpickling)."""
    path = Path(folder) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint state {path} not found") from None
    except Exception as err:
        raise CheckpointError(f"checkpoint state {path} is unreadable: {err}") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"checkpoint state {path} has an unknown format")
    return state


def check_fingerprint(saved: dict[str, Any], current: dict[str, Any], folder: Path) -> None:
    """Refuse to resume when a setting that changes what a step computes differs."""
    for section in sorted(set(saved) | set(current)):
        old, new = saved.get(section), current.get(section)
        if old == new:
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    raise CheckpointError(
                        f"cannot resume from {folder}: '{section}.{key}' was {old.get(key)!r} and is now "
                        f"{new.get(key)!r}; start a new run (another name) or restore the setting"
                    )
        raise CheckpointError(
            f"cannot resume from {folder}: '{section}' was {old!r} and is now {new!r}"
        )


__all__ = [
    "RESUMABLE_CHANGES",
    "TrainingState",
    "check_fingerprint",
    "load_state",
    "restore_rng_state",
    "rng_state",
    "save_checkpoint",
]
