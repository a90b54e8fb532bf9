"""Pretraining throughput: steps/s, pairs/s, data-wait fraction and peak memory.

Protocol:
- data: generated CT phantoms written straight into a temporary cache (values scaled through the
  CT window [-1350, 1000] HU, body = above -500 HU), large enough for 128x128x32 patches;
- configurations: ``demo`` (recipes/demo.yaml's model and pretrain sections) and ``paper``
  (recipes/ct.yaml: hierarchical FPN base 32 x 5 levels, 10 pairs of 128x128x32, 1024 positives);
- each configuration runs ``--steps`` optimizer steps through the real loop
  (:func:`voxssl.train.loop.pretrain`: data workers, augmentations, forward/backward, Adam);
  the first ``--warmup`` steps are excluded from the rates; checkpoints only at the end;
- reported: steps/s and pairs/s (pairs = pairs_per_step), data-wait fraction (time the loop
  waited for the next batch / wall time of the measured steps), peak memory (CPU: peak resident
  set of this process, GPU: ``torch.cuda.max_memory_allocated``).

Usage::

    .venv/bin/python benchmarks/pretrain_throughput.py                       # both, CPU, 3 steps
    .venv/bin/python benchmarks/pretrain_throughput.py --device cuda --steps 30 --amp bf16

Results are merged into benchmarks/results/pretrain_throughput.json, keyed by configuration and
device.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pretrain_throughput.json"
RECIPES = {"demo": REPO / "recipes" / "demo.yaml", "paper": REPO / "recipes" / "ct.yaml"}
WINDOW_HU = (-1350.0, 1000.0)


def write_phantom_cache(cache_dir: Path, count: int, shape: tuple[int, int, int]) -> None:
    from voxssl.data.cache import case_key, empty_manifest, write_case, write_manifest
    from voxssl.data.phantoms.generate import generate_phantom

    manifest = empty_manifest()
    for seed in range(count):
        phantom = generate_phantom(seed, "ct", shape=shape)
        low, high = WINDOW_HU
        image = np.clip((phantom.image - low) / (high - low), 0, 1)
        case_id = f"phantom_{seed:03d}"
        meta = {
            "case_id": case_id,
            "source": "phantoms",
            "modality": "ct",
            "spacing": list(phantom.spacing),
            "shape": list(image.shape),
            "num_channels": 1,
            "directory": f"phantoms/{case_id}",
        }
        manifest["cases"][case_key("phantoms", case_id)] = write_case(
            cache_dir / "phantoms" / case_id, image, None, phantom.image > -500, meta
        )
    write_manifest(cache_dir, manifest)


def run_one(name: str, args: argparse.Namespace, cache_dir: Path, out_dir: Path) -> dict:
    from voxssl.config.recipe import load_recipe
    from voxssl.train.loop import pretrain

    total = args.warmup + args.steps
    overrides = [
        f"data.cache_dir={cache_dir}",
        f"output_dir={out_dir}",
        f"name=bench-{name}",
        f"pretrain.steps={total}",
        f"pretrain.checkpoint_every={total}",
        f"pretrain.log_every={total}",
        f"pretrain.image_every={total}",
        f"pretrain.device={args.device}",
        f"pretrain.amp={args.amp}",
    ]
    if args.num_workers is not None:
        overrides.append(f"pretrain.num_workers={args.num_workers}")
    if args.pairs_per_step is not None:
        overrides += [
            f"pretrain.pairs_per_step={args.pairs_per_step}",
            f"pretrain.pairs_per_volume={args.pairs_per_step}",
        ]
    recipe = load_recipe(RECIPES[name], overrides)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    result = pretrain(recipe, progress=False)
    wall = time.perf_counter() - started
    measured = [s for s in sorted(result.step_seconds) if s > args.warmup]
    seconds = sum(result.step_seconds[s] for s in measured)
    waited = sum(result.data_wait_seconds[s] for s in measured)
    cfg = recipe.pretrain
    row = {
        "config": name,
        "device": args.device if args.device != "cuda" else torch.cuda.get_device_name(),
        "amp": args.amp,
        "torch_threads": torch.get_num_threads(),
        "num_workers": cfg.num_workers,
        "patch_size": list(cfg.patch_size),
        "pairs_per_step": cfg.pairs_per_step,
        "positives_per_pair": cfg.positives_per_pair,
        "model": {
            "preset": recipe.model.preset,
            "base_channels": recipe.model.base_channels,
            "num_levels": recipe.model.num_levels,
        },
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "measured_steps": len(measured),
        "seconds_per_step": seconds / len(measured),
        "steps_per_s": len(measured) / seconds,
        "pairs_per_s": len(measured) * cfg.pairs_per_step / seconds,
        "data_wait_fraction": waited / seconds,
        "first_loss": result.losses[1],
        "last_loss": result.losses[max(result.losses)],
        "wall_s_including_setup": wall,
    }
    if args.device == "cuda":
        row["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
    row["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", choices=["demo", "paper", "both"], default="both")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="measured steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", choices=["auto", "bf16", "fp32"], default="auto")
    parser.add_argument("--num-workers", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--pairs-per-step",
        type=int,
        default=None,
        help="override the recipe's pairs per step (the paper's 10 pairs need > 22 GB in fp32 on CPU)",
    )
    parser.add_argument("--phantoms", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = ["demo", "paper"] if args.config == "both" else [args.config]
    rows = []
    with tempfile.TemporaryDirectory(prefix="voxssl-bench-") as tmp:
        cache = Path(tmp) / "cache"
        write_phantom_cache(
            cache, args.phantoms, shape=(192, 160, 64)
        )  # 400x320x240 mm at ~2x2x3.75 mm
        for name in names:
            row = run_one(name, args, cache, Path(tmp) / "runs")
            rows.append(row)
            print(json.dumps(row, indent=1), flush=True)
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    for row in rows:
        key = f"{row['config']}/{row['device']}/{row['amp']}/pairs{row['pairs_per_step']}"
        results[key] = {
            **row,
            "host": platform.node(),
            "cpu_count": __import__("os").cpu_count(),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
    from voxssl.utils.atomic import atomic_write_text

    atomic_write_text(args.out, json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
