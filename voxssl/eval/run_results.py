"""The results folder of ``voxssl linear-probe`` / ``fine-tune``: never replaced silently, resumable.

A run folder that already holds results is refused unless the user says what to do with it:
``overwrite`` removes what an earlier run wrote (results, splits, fold folders) before the new run
writes anything; ``resume`` keeps every fold that finished and redoes the others. A fold is
finished when ``<fold>/scores.json`` exists: it is written last, after the fold's model and
outputs, so a fold interrupted at any point has none and restarts from its beginning.

``run.json`` records what produced the results (protocol, initial weights and the recipe values that
change them); ``resume`` refuses a recipe that differs in any of them and names the keys.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from voxssl.errors import ConfigError
from voxssl.eval.metrics import CaseScores
from voxssl.utils.atomic import atomic_write_text

RunMode = Literal["new", "overwrite", "resume"]

RUN_FILE = "run.json"
SCORES_FILE = "scores.json"
#: Files a run writes at the top of its folder (removed by ``overwrite``).
RUN_OUTPUTS = (
    "results.json",
    "results.csv",
    "results.md",
    "splits.json",
    RUN_FILE,
    "recipe.resolved.yaml",
)
#: Fold folders: ``fold0``, ``fold3_n8`` (low-data subsets).
FOLD_DIR = re.compile(r"fold\d+(_n\d+)?")
#: Keys of the protocol section that do not change the results (may differ on --resume).
RESUMABLE_CHANGES = ("device", "cpu_threads", "tensorboard", "log_every", "cv.folds")


class RunMismatchError(ConfigError):
    """``--resume`` with a recipe or weights other than those of the run being resumed."""


def earlier_outputs(run_dir: Path) -> list[str]:
    """What an earlier run left in ``run_dir`` that holds results (empty: nothing to lose)."""
    if not run_dir.is_dir():
        return []
    found = [name for name in ("results.json", RUN_FILE) if (run_dir / name).is_file()]
    found += sorted(
        f"{p.name}/"
        for p in run_dir.iterdir()
        if p.is_dir()
        and FOLD_DIR.fullmatch(p.name)
        and any((p / name).exists() for name in (SCORES_FILE, "model.safetensors"))
    )
    return found


def check_run_folder(run_dir: Path, mode: RunMode) -> None:
    """Refuse to write over an earlier run's results unless ``mode`` says what to do with them."""
    found = earlier_outputs(run_dir)
    if mode == "new" and found:
        shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
        raise ConfigError(
            f"{run_dir} already holds the results of an earlier run ({shown}); pass --overwrite "
            f"to replace them, --resume to finish its unfinished folds, or --set name=OTHER for a "
            f"separate run"
        )
    if mode == "resume" and not (run_dir / RUN_FILE).is_file():
        what = (
            f"its results were written without {RUN_FILE} (an older voxssl); use --overwrite"
            if found
            else "nothing to resume"
        )
        raise ConfigError(f"--resume: {run_dir} holds no resumable run; {what}")


def clear_run_folder(run_dir: Path) -> None:
    """Remove what a run writes (``overwrite``); other files of the user stay."""
    if not run_dir.is_dir():
        return
    for name in RUN_OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    for path in run_dir.iterdir():
        if path.is_dir() and FOLD_DIR.fullmatch(path.name):
            shutil.rmtree(path)


def run_fingerprint(
    resolved: dict[str, Any], section: str, protocol: str, weights: str
) -> dict[str, Any]:
    """The values that decide a run's results: a resumed run must agree on every one."""
    config = json.loads(json.dumps(resolved.get(section) or {}, default=str))
    for dotted in RESUMABLE_CHANGES:
        node = config
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return json.loads(
        json.dumps(
            {
                "protocol": protocol,
                "weights": weights,
                "seed": resolved.get("seed"),
                "data": {"cache_dir": (resolved.get("data") or {}).get("cache_dir")},
                "preprocess": resolved.get("preprocess"),
                "model": resolved.get("model"),
                section: config,
            },
            default=str,
        )
    )


def write_run_file(run_dir: Path, fingerprint: dict[str, Any]) -> None:
    atomic_write_text(run_dir / RUN_FILE, json.dumps(fingerprint, indent=1) + "\n")


def check_same_run(run_dir: Path, fingerprint: dict[str, Any]) -> None:
    """``--resume``: the recipe and weights must be those of the run being resumed."""
    earlier = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8"))
    before, now = _flatten(earlier), _flatten(fingerprint)
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        shown = "; ".join(
            f"{k}: {before.get(k, '(absent)')!r} then, {now.get(k, '(absent)')!r} now"
            for k in changed[:3]
        )
        more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
        raise RunMismatchError(
            f"--resume: {run_dir} was run with other settings ({shown}{more}); resume it with "
            f"the same recipe and weights, or pass --overwrite to start again"
        )


def write_fold_scores(fold_dir: Path, scores: list[CaseScores]) -> None:
    """Mark a fold finished (written after everything else of the fold)."""
    data = [
        {
            "case_id": s.case_id,
            "dice": {str(k): _finite(v) for k, v in s.dice.items()},
            "hd95": {str(k): _finite(v) for k, v in s.hd95.items()},
        }
        for s in scores
    ]
    atomic_write_text(fold_dir / SCORES_FILE, json.dumps(data, indent=1) + "\n")


def finished_folds(run_dir: Path) -> dict[str, list[CaseScores]]:
    """Fold name -> its scores, for every fold of ``run_dir`` that finished."""
    finished = {}
    for path in sorted(run_dir.glob(f"fold*/{SCORES_FILE}")):
        if not FOLD_DIR.fullmatch(path.parent.name):
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        finished[path.parent.name] = [
            CaseScores(
                entry["case_id"],
                {int(k): _nan(v) for k, v in entry["dice"].items()},
                {int(k): _nan(v) for k, v in entry.get("hd95", {}).items()},
            )
            for entry in data
        ]
    return finished


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): data}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


__all__ = [
    "RunMismatchError",
    "RunMode",
    "check_run_folder",
    "check_same_run",
    "clear_run_folder",
    "earlier_outputs",
    "finished_folds",
    "run_fingerprint",
    "write_fold_scores",
    "write_run_file",
]
