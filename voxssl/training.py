"""What every training loop of voxssl shares: one optimizer step, the run log, resumable state.

The loops (pretraining :mod:`voxssl.train.loop`, the downstream probe and fine-tuning
:mod:`voxssl.eval.train`, few-shot :mod:`voxssl.fewshot.train`, DINOv2 :mod:`voxssl.dinov2.loop`,
classification :mod:`voxssl.classify.train`) differ in what they forward and what they log; they
run a step, log and checkpoint the same way:

* device and precision: :mod:`voxssl.device` (``resolve_device``, ``autocast``);
* a step: ``with autocast(...): loss = ...`` then :func:`optimizer_step` (zero the gradients,
  backward, clip the global gradient norm when asked, step) and :func:`check_finite`;
* the run log: :class:`RunLogger` (TensorBoard scalars and images plus a tqdm bar, rank 0 only),
  :class:`ThroughputMeter` and :func:`gpu_memory_gb` for the ``perf/*`` scalars;
* resumable state: :func:`save_state` / :func:`load_state` (written atomically, read with
  ``torch.load(weights_only=True)`` so no pickled code ever runs) and :func:`rng_state` /
  :func:`restore_rng_state` for torch's generators.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from voxssl.errors import CheckpointError
from voxssl.utils.atomic import atomic_path

# ------------------------------------------------------------------------------------------- step


def optimizer_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    max_norm: float = 0.0,
    parts: Mapping[str, Iterable[torch.Tensor]] | None = None,
    report_norm: bool = False,
) -> dict[str, float]:
    """Zero the gradients, backpropagate ``loss``, clip, step; returns the gradient norms.

    ``max_norm > 0`` clips the global L2 norm of the gradients of every parameter the optimizer
    updates (one norm, ``"all"``), or of each of ``parts`` separately (DINOv2 clips the backbone
    and each head on its own). The norms before clipping are returned when clipping or with
    ``report_norm`` (an empty dict otherwise: computing a norm costs a pass over the gradients).
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    norms: dict[str, float] = {}
    if max_norm > 0 or report_norm:
        limit = max_norm if max_norm > 0 else math.inf
        groups = parts or {"all": [p for g in optimizer.param_groups for p in g["params"]]}
        for name, parameters in groups.items():
            norms[name] = float(torch.nn.utils.clip_grad_norm_(list(parameters), limit))
    optimizer.step()
    return norms


def check_finite(value: float, step: int, hint: str) -> None:
    """Stop a run whose loss became NaN or infinite, saying at which step and what to try."""
    if not math.isfinite(value):
        raise FloatingPointError(f"the loss is {value} at step {step}; {hint}")


# -------------------------------------------------------------------------------------------- log


class RunLogger:
    """TensorBoard + progress bar of one run; on ranks other than 0 (``enabled=False``) every
    method does nothing. ``tensorboard_dir=None`` keeps only the bar."""

    def __init__(
        self,
        tensorboard_dir: Path | None,
        *,
        total_steps: int,
        start_step: int = 0,
        description: str = "train",
        enabled: bool = True,
        progress: bool = True,
    ) -> None:
        self.writer: SummaryWriter | None = None
        self.bar: Any = None
        if not enabled:
            return
        if tensorboard_dir is not None:
            self.writer = SummaryWriter(
                log_dir=str(tensorboard_dir), purge_step=start_step if start_step > 0 else None
            )
        if progress:
            self.bar = tqdm(
                total=total_steps,
                initial=start_step,
                desc=description,
                unit="step",
                dynamic_ncols=True,
                leave=False,
            )

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, global_step=step)

    def image(self, step: int, tag: str, image: torch.Tensor) -> None:
        """A (3, H, W) picture with values in [0, 1]."""
        if self.writer is not None:
            self.writer.add_image(tag, image.clamp(0, 1), global_step=step, dataformats="CHW")

    def advance(self, steps: int = 1, postfix: Mapping[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(steps)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThroughputMeter:
    """Steps/s and the fraction of wall time the loop spent waiting for data, since the last read."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.perf_counter()
        self.data_wait = 0.0
        self.steps = 0

    def add(self, data_wait_s: float) -> None:
        self.data_wait += data_wait_s
        self.steps += 1

    def read(self, samples_per_step: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out = {
            "perf/steps_per_s": self.steps / elapsed,
            "perf/pairs_per_s": self.steps * samples_per_step / elapsed,
            "perf/data_wait_fraction": self.data_wait / elapsed,
        }
        self.reset()
        return out


def gpu_memory_gb(device: torch.device) -> dict[str, float]:
    """Peak allocated GPU memory since the last call (GB), and resets the peak."""
    if device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(device) / 1e9
    torch.cuda.reset_peak_memory_stats(device)
    return {"perf/gpu_memory_gb": peak}


# ------------------------------------------------------------------------------------------ state


def rng_state() -> dict[str, Any]:
    """torch's CPU and CUDA generator states."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if (
        "cuda" in state
        and torch.cuda.is_available()
        and len(state["cuda"]) == torch.cuda.device_count()
    ):
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` (tensors and plain data only) to ``path`` atomically: a reader sees the old
    file or the new one, never half of one."""
    with atomic_path(Path(path), suffix=".pt") as tmp:
        torch.save(dict(state), tmp)
    return Path(path)


def load_state(path: Path, what: str = "training state", hint: str = "") -> dict[str, Any]:
    """A file written by :func:`save_state`, unpickled with ``weights_only=True`` (no code runs);
    a missing, foreign or corrupt file is a :class:`~voxssl.errors.CheckpointError` naming it
    (and ending with ``hint``, what the user can do about it)."""
    path = Path(path)
    tail = f"; {hint}" if hint else ""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} not found{tail}") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{what} {path} is not a voxssl state file: reading it would run pickled code, "
            f"which voxssl never does{tail}"
        ) from None
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"{what} {path} is unreadable ({reason}){tail}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{what} {path} is not a voxssl state file{tail}")
    return state


__all__ = [
    "RunLogger",
    "ThroughputMeter",
    "check_finite",
    "gpu_memory_gb",
    "load_state",
    "optimizer_step",
    "restore_rng_state",
    "rng_state",
    "save_state",
]
