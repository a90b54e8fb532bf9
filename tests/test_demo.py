"""``voxssl demo`` twice in a row, shrunk to seconds: the second run reuses every stage (no phantom
rewritten, no case preprocessed, no step of pretraining or probing redone) and prints the same
results: the pretraining summary and the pretrained probe beside its random-init baseline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from voxssl.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--cases",
    "3",
    "--shape",
    "48,40,16",
    "--quiet",
    "--set",
    "preprocess.ct.spacing=10,10,15",
    "--set",
    "data.num_workers=1",
    "--set",
    "pretrain.steps=3",
    "--set",
    "pretrain.num_workers=0",
    "--set",
    "pretrain.pairs_per_step=1",
    "--set",
    "pretrain.positives_per_pair=16",
    "--set",
    "pretrain.patch_size=16,16,8",
    "--set",
    "probe.steps=4",
    "--set",
    "probe.patch_size=16,16,8",
    "--set",
    "probe.sw_roi_size=32,32,16",
    "--set",
    "probe.overlay_slices=0",
    "--set",
    "probe.write_predictions=false",
]


def _outputs(folder: Path) -> dict[str, int]:
    """mtime of every file the demo wrote (a file rewritten, even identically, changes it)."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "tensorboard" not in p.parts
    }


def test_demo_twice_reuses_every_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["demo", "--recipes", str(REPO_ROOT / "recipes"), *TINY])
    first = capsys.readouterr().out
    assert "pretraining: 3 steps in" in first and "loss " in first and " -> " in first
    assert "| organ | pretrained | random init |" in first
    assert "| **mean** |" in first
    for path in (
        "runs/demo/backbone.safetensors",
        "runs/probe-demo/results.md",
        "runs/probe-demo-random/results.md",
        "data/phantoms/images/phantom_ct_00002.nii.gz",
    ):
        assert (tmp_path / path).is_file(), path
    written = _outputs(tmp_path)
    manifest = json.loads((tmp_path / "cache" / "demo" / "manifest.json").read_text("utf-8"))

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    script = Path(sys.executable).parent / "voxssl"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "voxssl.cli"]
    second = subprocess.run(
        [*command, "demo", "--recipes", str(REPO_ROOT / "recipes"), *TINY],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr
    assert "reusing runs/demo/backbone.safetensors" in second.stdout
    assert "0 preprocessed, 3 up to date" in second.stdout
    assert second.stdout.count("reusing the finished folds") == 2
    # the same summary and tables as the first run
    assert first.split("pretraining:", 1)[1] == second.stdout.split("pretraining:", 1)[1]

    def work(outputs):  # the manifest is bookkeeping, rewritten with the same cases
        return {
            k: v
            for k, v in outputs.items()
            if (k.startswith(("data/", "cache/", "runs/demo/")) or "/fold" in k)
            and not k.endswith("manifest.json")
        }

    assert work(_outputs(tmp_path)) == work(written)
    again = json.loads((tmp_path / "cache" / "demo" / "manifest.json").read_text("utf-8"))
    assert again["cases"] == manifest["cases"]
