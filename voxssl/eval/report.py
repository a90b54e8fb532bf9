"""Aggregate per-case scores into results.json, results.csv and results.md in a run folder.

Two spreads are reported, as papers do both: ``std over cases`` (every test case of every fold
pooled) and ``std over folds`` (the spread of the per-fold means; seed 004's "65.6 +- 0.8").

Low-data subsets (``cv.n_train``: folds named ``fold<k>_n<n>``) are never pooled: each subset is
summarised on its own (``summary.subsets``, one table per subset in results.md), as seed 004's
Table 3 reports 4, 8 and 42 training images separately. The top-level summary is that of the
full-data subset (or of the largest one).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voxssl.eval.metrics import CaseScores
from voxssl.utils.atomic import atomic_write_text
from voxssl.vocabulary import organ_name


def _stats(values: Sequence[float]) -> dict[str, float | int]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(np.mean(finite)), "std": float(np.std(finite)), "n": len(finite)}


def subset_label(fold_name: str) -> str:
    """``"4"`` for ``fold0_n4``, ``"all"`` for ``fold0``."""
    match = re.search(r"_n(\d+)$", fold_name)
    return match.group(1) if match else "all"


def by_subset(results: dict[str, list[CaseScores]]) -> dict[str, dict[str, list[CaseScores]]]:
    """The results grouped by low-data subset, smallest first, ``all`` last."""
    groups: dict[str, dict[str, list[CaseScores]]] = {}
    for fold, scores in results.items():
        groups.setdefault(subset_label(fold), {})[fold] = scores
    order = sorted(groups, key=lambda label: (label == "all", int(label) if label != "all" else 0))
    return {label: groups[label] for label in order}


def summarize(results: dict[str, list[CaseScores]], class_ids: Sequence[int]) -> dict:
    """Summary of ``{fold name: [CaseScores]}``: per organ and overall, over cases and over folds,
    for each low-data subset on its own (``subsets``); the top level is the full-data subset's."""
    groups = by_subset(results)
    per_subset = {label: _summarize_one(group, class_ids) for label, group in groups.items()}
    main = "all" if "all" in per_subset else (list(per_subset)[-1] if per_subset else "all")
    summary = dict(per_subset.get(main) or _summarize_one({}, class_ids))
    summary["subset"] = main
    summary["subsets"] = per_subset
    return summary


def _summarize_one(results: dict[str, list[CaseScores]], class_ids: Sequence[int]) -> dict:
    all_cases = [s for scores in results.values() for s in scores]
    summary: dict = {"organs": {}, "folds": {}}
    for organ in class_ids:
        name = organ_name(organ)
        fold_means = [
            _stats([s.dice[organ] for s in scores])["mean"] for scores in results.values()
        ]
        entry = {
            "id": organ,
            "dice_over_cases": _stats([s.dice[organ] for s in all_cases]),
            "dice_over_folds": _stats(fold_means),
        }
        if any(s.hd95 for s in all_cases):
            entry["hd95_over_cases"] = _stats([s.hd95.get(organ, float("nan")) for s in all_cases])
        summary["organs"][name] = entry
    for fold, scores in results.items():
        summary["folds"][fold] = {
            "mean_dice": _stats([s.mean_dice() for s in scores])["mean"],
            "cases": [s.case_id for s in scores],
        }
    fold_means = [f["mean_dice"] for f in summary["folds"].values()]
    summary["mean_dice"] = {
        "over_cases": _stats([s.mean_dice() for s in all_cases]),
        "over_folds": _stats(fold_means),
    }
    return summary


def results_json(
    results: dict[str, list[CaseScores]], class_ids: Sequence[int], extra: dict | None = None
) -> str:
    cases = [
        {
            "fold": fold,
            "case_id": s.case_id,
            "dice": {organ_name(k): _nan_to_none(v) for k, v in s.dice.items()},
            **(
                {"hd95_mm": {organ_name(k): _nan_to_none(v) for k, v in s.hd95.items()}}
                if s.hd95
                else {}
            ),
        }
        for fold, scores in results.items()
        for s in scores
    ]
    data = {
        **(extra or {}),
        "classes": [organ_name(c) for c in class_ids],
        "summary": summarize(results, class_ids),
        "cases": cases,
    }
    return json.dumps(_nan_to_none(data), indent=2) + "\n"


def results_csv(results: dict[str, list[CaseScores]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fold", "case_id", "organ", "organ_id", "dice", "hd95_mm"])
    for fold, scores in results.items():
        for s in scores:
            for organ, dice in s.dice.items():
                hd = s.hd95.get(organ, float("nan"))
                writer.writerow(
                    [fold, s.case_id, organ_name(organ), organ, _fmt(dice, 4), _fmt(hd, 2)]
                )
    return buffer.getvalue()


def results_markdown(
    results: dict[str, list[CaseScores]], class_ids: Sequence[int], title: str = "Results"
) -> str:
    groups = by_subset(results)
    if len(groups) <= 1:
        return f"# {title}\n\n" + _subset_markdown(results, class_ids)
    sections = [f"# {title}", ""]
    for label, group in groups.items():
        n = "all training cases of each fold" if label == "all" else f"{label} training cases"
        sections += [f"## {n}", "", _subset_markdown(group, class_ids)]
    return "\n".join(sections)


def _subset_markdown(results: dict[str, list[CaseScores]], class_ids: Sequence[int]) -> str:
    summary = _summarize_one(results, class_ids)
    with_hd = any(s.hd95 for scores in results.values() for s in scores)
    header = "| organ | Dice % (mean ± std over cases) | Dice % (mean ± std over folds) |"
    rule = "|---|---|---|"
    if with_hd:
        header += " HD95 mm |"
        rule += "---|"
    lines = [
        f"{len(summary['folds'])} fold(s), {sum(len(v) for v in results.values())} test case(s).",
        "",
        header,
        rule,
    ]
    for name, entry in summary["organs"].items():
        row = f"| {name} | {_pct(entry['dice_over_cases'])} | {_pct(entry['dice_over_folds'])} |"
        if with_hd:
            row += f" {_mm(entry['hd95_over_cases'])} |"
        lines.append(row)
    mean = summary["mean_dice"]
    lines.append(
        f"| **mean** | **{_pct(mean['over_cases'])}** | **{_pct(mean['over_folds'])}** |"
        + (" |" if with_hd else "")
    )
    return "\n".join(lines) + "\n"


def write_report(
    run_dir: Path,
    results: dict[str, list[CaseScores]],
    class_ids: Sequence[int],
    title: str,
    extra: dict | None = None,
) -> dict[str, Path]:
    """Write results.{json,csv,md} into ``run_dir`` (atomically) and return their paths."""
    run_dir = Path(run_dir)
    return {
        "json": atomic_write_text(
            run_dir / "results.json", results_json(results, class_ids, extra)
        ),
        "csv": atomic_write_text(run_dir / "results.csv", results_csv(results)),
        "md": atomic_write_text(
            run_dir / "results.md", results_markdown(results, class_ids, title)
        ),
    }


def _pct(stats: dict) -> str:
    if stats["n"] == 0:
        return "n/a"
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def _mm(stats: dict) -> str:
    return "n/a" if stats["n"] == 0 else f"{stats['mean']:.1f} ± {stats['std']:.1f}"


def _fmt(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


__all__ = [
    "by_subset",
    "results_csv",
    "results_json",
    "results_markdown",
    "subset_label",
    "summarize",
    "write_report",
]
