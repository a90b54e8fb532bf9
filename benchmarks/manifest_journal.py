"""Benchmark: the cost of recording one finished case in the preprocessed cache's manifest.

Protocol
--------
A manifest of N realistic entries (the meta of a cached CT case, about 1.6 KB of JSON each) is
written into a fresh folder. Then, in one run and on one machine, side by side:

* ``journal``: what ``voxssl preprocess`` does now for each finished case
  (``voxssl.data.cache.update_manifest``: one JSON line appended to ``manifest-<n>.journal``
  and fsynced, under the manifest lock);
* ``rewrite``: what it did before (and what a per-case atomic rewrite would cost): the whole
  manifest serialised and written atomically (``voxssl.data.cache.write_manifest``), under the
  same lock.

Reported per N: milliseconds per recorded case (median of ``--repeats`` records), and the ratio
rewrite / journal. After the journal records, ``read_manifest`` must return all N + repeats entries
(checked). Written to ``benchmarks/results/manifest_journal.json`` and the README section.

    .venv/bin/python benchmarks/manifest_journal.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "manifest_journal.json"
README = HERE / "README.md"
SECTION = "manifest_journal"


def example_entry(index: int) -> dict:
    """The manifest entry of one cached case, as ``voxssl preprocess`` writes it."""
    affine = [[1.5, 0.0, 0.0, -200.0], [0.0, 1.5, 0.0, -180.0], [0.0, 0.0, 3.0, 40.0], [0, 0, 0, 1]]
    return {
        "case_id": f"case{index:05d}",
        "source": "ct",
        "directory": f"ct/case{index:05d}",
        "modality": "ct",
        "spacing": [1.5, 1.5, 3.0],
        "shape": [261, 210, 96],
        "num_channels": 1,
        "affine": affine,
        "original_affine": affine,
        "original_shape": [512, 512, 150],
        "orientation": [[0.0, -1.0], [1.0, -1.0], [2.0, 1.0]],
        "source_spacing": [0.78, 0.78, 2.5],
        "ratio": [1.92, 1.92, 1.2],
        "resampled_shape": [267, 267, 125],
        "crop_box": [[3, 264], [20, 230], [10, 106]],
        "intensity": {"kind": "ct_window", "low": [-1350.0], "high": [1000.0]},
        "preprocess": {
            "modality": "ct",
            "version": 1,
            "spacing": [1.5, 1.5, 3.0],
            "crop_threshold_hu": -500.0,
            "window_hu": [-1350.0, 1000.0],
            "body_threshold_hu": -500.0,
        },
        "label_classes": [1, 2, 3, 4, 6, 7, 8, 9, 11],
        "annotated": None,
        "source_path": f"/data/ct/imagesTr/case{index:05d}.nii.gz",
        "label_path": f"/data/ct/labelsTr/case{index:05d}.nii.gz",
        "label_format": "nifti",
        "channel_paths": [],
        "case_metadata": {},
        "fingerprint": {"image": [52428800, 1700000000000000000 + index], "label": [262144, 1]},
        "params_hash": "0123456789abcdef",
        "files": {"image": "image.npy", "label": "label.npy", "body_mask": "body_mask.npy"},
    }


def measure(cases: int, repeats: int) -> dict:
    from voxssl.data.cache import (
        empty_manifest,
        manifest_lock,
        read_manifest,
        update_manifest,
        write_manifest,
    )

    with tempfile.TemporaryDirectory(prefix="manifest_") as tmp:
        folder = Path(tmp)
        manifest = empty_manifest()
        manifest["cases"] = {f"ct/case{i:05d}": example_entry(i) for i in range(cases)}
        write_manifest(folder, manifest)
        snapshot_bytes = (folder / "manifest.json").stat().st_size
        update_manifest(folder, {"ct/first": example_entry(cases)})  # creates the journal
        journal, rewrite = [], []
        for k in range(repeats):
            key = f"ct/new{k}"
            start = time.perf_counter()
            update_manifest(folder, {key: example_entry(cases + 1 + k)})
            journal.append(time.perf_counter() - start)
            manifest["cases"][key] = example_entry(cases + 1 + k)
            start = time.perf_counter()
            with manifest_lock(folder):
                _rewrite(folder, manifest)
            rewrite.append(time.perf_counter() - start)
        assert len(read_manifest(folder)["cases"]) == cases + 1 + repeats
    journal_ms = 1000 * statistics.median(journal)
    rewrite_ms = 1000 * statistics.median(rewrite)
    return {
        "cases": cases,
        "snapshot_mb": round(snapshot_bytes / 2**20, 2),
        "journal_ms": round(journal_ms, 2),
        "rewrite_ms": round(rewrite_ms, 2),
        "ratio": round(rewrite_ms / journal_ms, 1),
    }


def _rewrite(folder: Path, manifest: dict) -> None:
    """The former per-record cost: the whole manifest, serialised and written atomically."""
    from voxssl.utils.atomic import atomic_write_text

    atomic_write_text(folder / "rewritten.json", json.dumps(manifest, indent=1, sort_keys=True))


def markdown_section(result: dict) -> str:
    rows = "\n".join(
        f"| {r['cases']} | {r['snapshot_mb']} | {r['journal_ms']} | {r['rewrite_ms']} | {r['ratio']}x |"
        for r in result["runs"]
    )
    return f"""## Recording a finished case in the cache manifest (`benchmarks/manifest_journal.py`)

{result["date"]}, {result["machine"]}; median of {result["repeats"]} records each, measured side by
side in one run. `voxssl preprocess` records every case the moment it is done (a killed run loses
no finished case); an appended, fsynced journal line keeps that cost flat as the cache grows, where
rewriting the whole manifest per case would grow with it.

| cases in the manifest | snapshot (MB) | journal line (ms) | whole rewrite (ms) | rewrite / journal |
|---|---|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parent))
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.utils.markdown_section import replace_section

    result = {
        "benchmark": SECTION,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} CPU x{os.cpu_count()}",
        "repeats": args.repeats,
        "runs": [measure(n, args.repeats) for n in args.cases],
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.results, json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        replace_section(README, SECTION, markdown_section(result))
    for run in result["runs"]:
        print(
            f"{run['cases']:>6} cases: journal {run['journal_ms']:.2f} ms, whole rewrite "
            f"{run['rewrite_ms']:.2f} ms ({run['ratio']}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
