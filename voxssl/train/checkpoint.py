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

from voxssl import training
from voxssl.checkpoint_layout import (
    MODEL_FILE,
    STATE_FILE,
    checkpoint_root,
    latest_checkpoint,
    list_checkpoints,
    step_dir_name,
)
from voxssl.errors import CheckpointError, ConfigError
from voxssl.models.weights import load_state_strict, load_weights

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
        "compile",
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


def save_checkpoint(
    run_dir: Path, state: TrainingState, save_model: Callable[[Path], object], keep: int = 2
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
        training.save_state(tmp / STATE_FILE, state.to_dict())
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
    state = training.load_state(path, "checkpoint state")
    if state.get("format") != STATE_FORMAT:
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


def restore_latest(
    run_dir: Path,
    resume: bool,
    fingerprint: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device | str = "cpu",
) -> tuple[int, dict[str, Any] | None]:
    """Start a run: ``(0, None)`` for a fresh one (refused when the folder already holds
    checkpoints), or, with ``resume``, the latest checkpoint's model and optimiser loaded and
    ``(step, RNG state)`` returned. Restore the RNG (:func:`voxssl.training.restore_rng_state`) only once the
    data iterator exists: creating a DataLoader iterator draws from torch's generator."""
    latest = latest_checkpoint(run_dir)
    if not resume:
        if latest is not None:
            raise ConfigError(
                f"{run_dir} already holds checkpoints ({latest.name}); pass --resume to continue "
                f"that run, or give this one another name (--set name=...)"
            )
        return 0, None
    if latest is None:
        raise CheckpointError(f"--resume: no checkpoint in {checkpoint_root(run_dir)}")
    state = load_state(latest)
    check_fingerprint(state["fingerprint"], fingerprint, latest)
    weights, _ = load_weights(latest / MODEL_FILE, device=device)
    load_state_strict(model, weights, str(latest / MODEL_FILE))
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming %s at step %d", run_dir, int(state["step"]))
    return int(state["step"]), state["rng"]


__all__ = [
    "RESUMABLE_CHANGES",
    "TrainingState",
    "check_fingerprint",
    "load_state",
    "restore_latest",
    "save_checkpoint",
]
