"""Benchmark: how long the ``voxssl`` command takes to answer ``--help`` and argument errors.

Protocol
--------
Each command runs as a user runs it: a fresh process of the installed console script
(``.venv/bin/voxssl``; ``python -m voxssl.cli`` when there is none), stdout/stderr captured, warm
file cache (one discarded run first). Wall time per run from ``time.perf_counter`` around
``subprocess.run``; ``--repeats`` runs per command, interleaved round-robin so that load on the
shared machine hits every command alike; best and median reported. Side by side in the same run,
for scale: the bare interpreter (``python -c pass``) and ``python -c "import torch"`` (what any
command pays once it needs torch; ``voxssl --help`` must not).

Commands: ``voxssl --help``; ``voxssl pretrain --help``; ``voxssl pretrain --bogus`` (an unknown
option); ``voxssl pretrain missing.yaml`` (a recipe that does not exist); ``voxssl pretrain
bad.yaml`` (a recipe with an unknown key: the recipe is read and checked before torch is imported).

Target (issue 14.2): ``--help`` and a usage error well under 1 s.

    .venv/bin/python benchmarks/cli_startup.py        # writes benchmarks/results/cli_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def voxssl_command() -> list[str]:
    script = Path(sys.executable).parent / "voxssl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "voxssl.cli"]


def commands(folder: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (argv, expected exit code)."""
    bad = folder / "bad.yaml"
    bad.write_text("name: bench\nbogus_key: 1\n", encoding="utf-8")
    voxssl = voxssl_command()
    return {
        "python -c pass (interpreter floor)": ([sys.executable, "-c", "pass"], 0),
        'python -c "import torch" (for scale)': ([sys.executable, "-c", "import torch"], 0),
        "voxssl --help": ([*voxssl, "--help"], 0),
        "voxssl pretrain --help": ([*voxssl, "pretrain", "--help"], 0),
        "voxssl pretrain --bogus (usage error)": ([*voxssl, "pretrain", "--bogus"], 2),
        "voxssl pretrain missing.yaml (usage error)": (
            [*voxssl, "pretrain", str(folder / "missing.yaml")],
            2,
        ),
        "voxssl pretrain bad.yaml (unknown recipe key)": ([*voxssl, "pretrain", str(bad)], 1),
    }


def time_once(argv: list[str], expected: int, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        cwd=REPO_ROOT,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != expected:
        raise SystemExit(
            f"{' '.join(argv)}: exit code {done.returncode}, expected {expected}\n{done.stderr}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "cli_startup.json"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        table = commands(Path(tmp))
        for argv, expected in table.values():  # warm the file cache
            time_once(argv, expected, env)
        runs: dict[str, list[float]] = {name: [] for name in table}
        for _ in range(args.repeats):
            for name, (argv, expected) in table.items():
                runs[name].append(time_once(argv, expected, env))
    results = {
        name: {
            "best_s": round(min(times), 3),
            "median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times],
        }
        for name, times in runs.items()
    }
    record = {
        "benchmark": "cli_startup",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()),
            "python": sys.version.split()[0],
        },
        "command": voxssl_command(),
        "repeats": args.repeats,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print("| command | best s | median s |")
    print("|---|---|---|")
    for name, entry in results.items():
        print(f"| `{name}` | {entry['best_s']:.2f} | {entry['median_s']:.2f} |")
    print(f"\nload average {record['machine']['load_average']}; raw numbers in {args.out}")


if __name__ == "__main__":
    main()
