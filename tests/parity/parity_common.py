"""What the parity fixture generator (scripts/make_parity_fixtures.py) and the parity tests share.

Weights are not stored in the fixtures: every tensor is drawn from a generator seeded by its
(voxssl) name, so the generator fills the reference module and the test fills voxssl's module with
identical numbers through the key mapping. A fixture stores the inputs' seeds or the inputs
themselves, the reference outputs, and a checksum of the weights it used.

The augmentation statistics are computed by the same function on the reference's outputs (in the
generator) and on voxssl's (in the test).
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "parity"

#: max abs difference allowed between voxssl and the reference, fp32
TOLERANCE = 1e-5


def max_abs_diff(a, b) -> float:
    a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    return float(np.abs(a.astype(np.float64) - np.asarray(b, dtype=np.float64)).max())


def seeded(name: str) -> np.random.RandomState:
    return np.random.RandomState(zlib.crc32(name.encode()))


def deterministic_tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor for parameter/buffer ``name``, a function of the name and shape only.

    Conv/linear weights: U(-1, 1) / sqrt(fan_in); norm weights 1 + U(-0.1, 0.1); running variances
    0.5 + U(0, 1); biases and running means U(-0.1, 0.1).
    """
    rng = seeded(name)
    u = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        out = 0.5 + (u + 1.0) / 2.0
    elif leaf in ("bias", "running_mean"):
        out = 0.1 * u
    elif leaf == "weight" and len(shape) == 1:
        out = 1.0 + 0.1 * u
    elif leaf == "weight":
        fan_in = int(np.prod(shape[1:]))
        out = u / np.sqrt(fan_in)
    else:
        out = u
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))


def filled_state(state: dict[str, torch.Tensor], names: dict[str, str] | None = None) -> dict:
    """A state dict with every floating tensor of ``state`` replaced by ``deterministic_tensor`` of
    its name (``names`` maps a key to the name to draw it by: the voxssl key of a reference key)."""
    out = {}
    for key, value in state.items():
        if not torch.is_floating_point(value):
            out[key] = value
            continue
        out[key] = deterministic_tensor((names or {}).get(key, key), tuple(value.shape))
    return out


def checksum(state: dict[str, torch.Tensor]) -> float:
    """Order-independent sum of the absolute values of the floating tensors."""
    return float(sum(v.double().abs().sum() for v in state.values() if torch.is_floating_point(v)))


def deterministic_array(name: str, shape: tuple[int, ...], low=0.0, high=1.0) -> np.ndarray:
    return seeded(name).uniform(low, high, size=shape).astype(np.float32)


# ----------------------------------------------------------------- local augmentation statistics

#: The fixed input of the augmentation statistics: (X, Y, Z), smooth structure in [0.05, 0.95].
AUG_SHAPE = (48, 48, 32)


def augmentation_input() -> np.ndarray:
    x, y, z = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in AUG_SHAPE], indexing="ij")
    image = 0.5 + 0.3 * np.sin(6.0 * x) * np.cos(5.0 * y) + 0.15 * np.cos(9.0 * z) * x
    noise = deterministic_array("augmentation_input", AUG_SHAPE, -0.05, 0.05)
    return np.clip(image + noise, 0.0, 1.0).astype(np.float32)


def run_statistics(image: np.ndarray, out: np.ndarray) -> dict[str, float]:
    """Per-run statistics of one augmented view ``out`` of ``image`` (both (X, Y, Z))."""
    changed = out != image
    delta = out.astype(np.float64) - image
    return {
        "applied": float(changed.any()),
        "changed_fraction": float(changed.mean()),
        "mean": float(out.mean()),
        "std": float(out.std()),
        "mean_abs_change": float(np.abs(delta).mean()),
        "q10": float(np.quantile(out, 0.1)),
        "q90": float(np.quantile(out, 0.9)),
    }


def summarize_runs(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard error of every statistic over the runs."""
    keys = runs[0].keys()
    summary = {}
    for key in keys:
        values = np.array([r[key] for r in runs], dtype=np.float64)
        summary[key] = {
            "mean": float(values.mean()),
            "se": float(values.std(ddof=1) / np.sqrt(len(values))),
            "n": len(values),
        }
    return summary
