"""Issue 15.3: two ``voxssl preprocess`` runs into one cache (real processes) share the work
without redoing or deleting each other's cases; a killed run loses no finished case."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.data.test_pipeline import write_recipe
from voxssl.data.cache import open_cache, read_manifest

pytestmark = pytest.mark.multiprocess  # real concurrent voxssl processes

NUM_CASES = 8


def write_cases(root: Path, count: int = NUM_CASES) -> Path:
    """CTs big enough (128 x 128 x 48 at 1 x 1 x 2 mm) that preprocessing one takes a moment."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    for i in range(count):
        image = np.full((128, 128, 48), -1000, np.int16)
        image[16:112, 24:104, 4:44] = rng.integers(-100, 200, size=(96, 80, 40))
        label = np.zeros(image.shape, np.uint8)
        label[40:80, 40:80, 10:40] = 6
        nib.save(nib.Nifti1Image(image, affine), root / "images" / f"case{i:02d}.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labels" / f"case{i:02d}.nii.gz")
    return root


def _command(recipe: Path, workers: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "voxssl.cli",
        "preprocess",
        str(recipe),
        "-q",
        "--set",
        f"data.num_workers={workers}",
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _counts(output: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+) preprocessed, (\d+) up to date, (\d+) failed", output)
    assert match, output
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def _check_cache(cache: Path, count: int) -> None:
    index = open_cache(cache)
    assert len(index) == count
    for case in index:
        assert case.image().shape == case.shape and case.label().shape == case.shape
        meta = json.loads((case.directory / "meta.json").read_text(encoding="utf-8"))
        assert meta["fingerprint"] == case.meta["fingerprint"]
    assert not list(cache.rglob(".tmp-*")) and not list(cache.rglob("*.lock"))


@pytest.mark.parametrize("workers", [1, 2])
def test_two_concurrent_runs_share_the_work_and_leave_a_valid_cache(tmp_path, workers):
    root = write_cases(tmp_path / "data")
    recipe = write_recipe(tmp_path, root)
    runs = [
        subprocess.Popen(
            _command(recipe, workers),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    counts = [_counts(output) for output in outputs]
    print("preprocessed, up to date, failed per run:", counts)
    assert sum(c[0] for c in counts) == NUM_CASES, outputs  # no case done twice
    assert all(c[0] + c[1] == NUM_CASES and c[2] == 0 for c in counts), outputs
    _check_cache(tmp_path / "cache", NUM_CASES)


def test_a_killed_run_loses_no_finished_case(tmp_path):
    root = write_cases(tmp_path / "data")
    recipe = write_recipe(tmp_path, root)
    cache = tmp_path / "cache"
    run = subprocess.Popen(
        _command(recipe), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env()
    )
    deadline = time.monotonic() + 300
    finished: list[Path] = []
    while len(finished) < 3 and time.monotonic() < deadline and run.poll() is None:
        finished = list(cache.glob("ph/*/meta.json"))
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert len(finished) >= 3, "the run ended before it could be killed"
    recorded = set(read_manifest(cache)["cases"])
    done = {f"ph/{p.parent.name}" for p in cache.glob("ph/*/meta.json")}
    # every case whose files were complete is in the manifest, except at most the one being
    # recorded at the instant of the kill
    assert len(done - recorded) <= 1, (sorted(done), sorted(recorded))
    assert len(recorded) >= 2
    rerun = subprocess.run(
        _command(recipe), capture_output=True, text=True, env=_env(), timeout=600
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    processed, skipped, failed = _counts(rerun.stdout + rerun.stderr)
    assert skipped == len(recorded) and processed == NUM_CASES - len(recorded) and failed == 0
    _check_cache(cache, NUM_CASES)


def test_manifest_benchmark_measures_both_ways(benchmark_script, tmp_path):
    bench = benchmark_script("manifest_journal")
    run = bench.measure(cases=20, repeats=2)
    assert run["cases"] == 20 and run["journal_ms"] > 0 and run["rewrite_ms"] > 0
