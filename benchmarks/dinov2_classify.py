"""Does continued DINOv2 training help? Slice-classification AUC of the trained encoder vs the
checkpoint it started from, on held-out CT phantoms, over several seeds.

Protocol:
1. Generate two phantom sets (``voxssl.data.phantoms``): ``--pretrain-cases`` for DINOv2 training
   (their labels are never used) and ``--eval-cases`` held-out phantoms (another seed) for the
   classification; preprocess both into one cache with recipes/dinov2_demo.yaml's preprocessing.
2. Per seed, ``voxssl dinov2 pretrain`` with recipes/dinov2_demo.yaml (the seed sets the random
   initialisation, the crops and the masks) on the slices of the first set only
   (``dinov2.data.cache_sources``). The run keeps its random start as ``encoder_init.safetensors``:
   that is the starting checkpoint; ``encoder.safetensors`` is the continued one.
3. ``voxssl classify train`` with recipes/classify_demo.yaml (linear probe, "the slice contains the
   liver", k-fold over the held-out cases, the same folds for every run) on both encoders.
4. Report AUC (mean over folds; per seed and the mean over seeds) to
   benchmarks/results/dinov2_classify.json and as a section of benchmarks/README.md. Exit 1 unless
   the continued encoder beats its start by ``REQUIRED_MARGIN`` with every seed.

    .venv/bin/python benchmarks/dinov2_classify.py --seeds 0 1 2     # ~4 CPU minutes per seed
    .venv/bin/python benchmarks/dinov2_classify.py --features cls_mean --no-readme --results X.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "dinov2_classify.json"
README = REPO / "benchmarks" / "README.md"
SECTION = "dinov2_classify"
#: How much higher (AUC, absolute) the continued encoder must score than its start, every seed.
REQUIRED_MARGIN = 0.05
FEATURES = {"cls": "the CLS token", "cls_mean": "the CLS token and the mean patch token"}


def build_recipes(work: Path, args: argparse.Namespace, seed: int):
    from demo_recipes import folder_source, recipe_over_folders

    from voxssl.config.recipe import recipe_from_dict

    sources = [folder_source(name, work / name) for name in ("pretrain", "heldout")]
    pretrain = recipe_over_folders(
        "dinov2_demo.yaml", work, sources, 2, seed=seed, name=f"dinov2-seed{seed}"
    )
    pretrain["dinov2"]["data"]["cache_sources"] = ["pretrain"]
    if args.steps:
        pretrain["dinov2"]["optim"]["steps"] = args.steps
    classify = recipe_over_folders("classify_demo.yaml", work, sources, 2, seed=seed)
    classify["classify"]["data"]["source"] = "heldout"
    if args.features:
        classify["classify"]["features"] = args.features
    return (
        recipe_from_dict(pretrain, "recipes/dinov2_demo.yaml (benchmark)"),
        recipe_from_dict(classify, "recipes/classify_demo.yaml (benchmark)"),
    )


def run_seed(work: Path, args: argparse.Namespace, seed: int) -> dict:
    from voxssl.classify.protocol import run_classify
    from voxssl.dinov2.loop import INIT_ENCODER_FILE, pretrain_dinov2

    pretrain_recipe, classify_recipe = build_recipes(work, args, seed)
    started = time.perf_counter()
    trained = pretrain_dinov2(pretrain_recipe, progress=False)
    if trained.encoder_path is None:
        raise SystemExit("DINOv2 training did not write an encoder")
    run = {
        "seed": seed,
        "pretrain_seconds": time.perf_counter() - started,
        "loss_first_last": [trained.losses[1], trained.losses[trained.last_step]],
    }
    arms = {"start": trained.run_dir / INIT_ENCODER_FILE, "continued": trained.encoder_path}
    for arm, weights in arms.items():
        classify_recipe.name = f"classify-{arm}-seed{seed}"
        started = time.perf_counter()
        report = run_classify(classify_recipe, classify_recipe.classify, str(weights))
        summary = report["summary"]
        run[arm] = {
            "auc": summary["auc_over_folds"]["mean"],
            "auc_std_over_folds": summary["auc_over_folds"]["std"],
            "fold_aucs": [fold["auc"] for fold in report["folds"]],
            "per_class": {k: v["mean"] for k, v in summary["per_class_over_folds"].items()},
            "pooled_auc": summary.get("pooled_auc"),
            "seconds": time.perf_counter() - started,
        }
    run["class_counts"] = report["class_counts"]
    run["continued_minus_start"] = run["continued"]["auc"] - run["start"]["auc"]
    print(
        f"seed {seed}: AUC start {run['start']['auc']:.3f}, continued {run['continued']['auc']:.3f}",
        flush=True,
    )
    return run


def markdown_section(result: dict) -> str:
    task = "the slice contains the liver (binary)"
    lines = [
        "## Continued DINOv2 training on phantom slices: AUC vs the starting checkpoint "
        "(`benchmarks/dinov2_classify.py`)",
        "",
        f"Training: recipes/dinov2_demo.yaml ({result['vit']}), {result['steps']} steps of batch "
        f"{result['batch_size']} on the slices of {result['pretrain_cases']} unlabelled CT phantoms "
        f"({result['pretrain_seconds']:.0f} s per run), from a random initialisation (the starting "
        f"checkpoint, kept as encoder_init.safetensors). Classification: recipes/classify_demo.yaml, "
        f"linear probe on {FEATURES[result.get('features', 'cls')]}, task: {task}; {result['folds']}-fold CV over the slices of "
        f"{result['eval_cases']} held-out phantoms ({result['class_counts']}). AUC: mean over folds, "
        f"then over the seeds {', '.join(str(r['seed']) for r in result['runs'])} (each seed: its own "
        f"initialisation and training run; same phantoms and folds). {result['machine']}, "
        f"{result['date']}.",
        "",
        "| seed | starting checkpoint | continued DINOv2 | margin |",
        "|---|---|---|---|",
    ]
    for run in result["runs"]:
        lines.append(
            f"| {run['seed']} | {_auc(run['start'])} | {_auc(run['continued'])} "
            f"| {run['continued_minus_start']:+.3f} |"
        )
    lines.append(
        f"| **mean** | **{result['start_auc']:.3f}** | **{result['continued_auc']:.3f}** | "
        f"**{result['continued_auc'] - result['start_auc']:+.3f}** |"
    )
    margin = result["smallest_margin"]
    lines += [
        "",
        f"Smallest margin over the seeds: {margin:+.3f} AUC (required: at least {REQUIRED_MARGIN}).",
    ]
    if margin < REQUIRED_MARGIN:
        lines += ["", "**FAILED**: continued training does not clearly beat its start."]
    return "\n".join(lines)


def _auc(arm: dict) -> str:
    return f"{arm['auc']:.3f} ± {arm['auc_std_over_folds']:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, default=None, help="Working folder (default: temporary)."
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-cases", type=int, default=8)
    parser.add_argument("--eval-cases", type=int, default=8)
    parser.add_argument("--steps", type=int, default=0, help="0: recipes/dinov2_demo.yaml's value.")
    parser.add_argument(
        "--features",
        choices=["cls", "cls_mean"],
        default=None,
        help="Classifier input (default: recipes/classify_demo.yaml's, the CLS token).",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where to write the JSON.")
    parser.add_argument(
        "--no-readme", action="store_true", help="Do not touch benchmarks/README.md."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, str(REPO / "benchmarks"))
    from phantom_probe import write_phantoms  # the held-out phantom writer of the 3D benchmark

    from voxssl.data.pipeline import run_preprocess
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.utils.markdown_section import replace_section

    with tempfile.TemporaryDirectory(prefix="dinov2_classify_") as tmp:
        work = args.work or Path(tmp)
        if not (work / "cache" / "manifest.json").is_file():
            write_phantoms(work / "pretrain", args.pretrain_cases, seed=0, prefix="pretrain")
            write_phantoms(work / "heldout", args.eval_cases, seed=1, prefix="heldout")
            if not run_preprocess(build_recipes(work, args, 0)[0], progress=False).ok:
                raise SystemExit("preprocessing failed")
        runs = [run_seed(work, args, seed) for seed in args.seeds]
        pretrain_recipe, classify_recipe = build_recipes(work, args, args.seeds[0])
    vit = pretrain_recipe.dinov2.vit
    result = {
        "benchmark": SECTION,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} CPU x{os.cpu_count()}",
        "task": "contains liver",
        "features": classify_recipe.classify.features,
        "vit": f"ViT {vit.hidden_size} wide, {vit.num_hidden_layers} blocks, {vit.patch_size} px patches",
        "steps": pretrain_recipe.dinov2.optim.steps,
        "batch_size": pretrain_recipe.dinov2.optim.batch_size,
        "pretrain_cases": args.pretrain_cases,
        "eval_cases": args.eval_cases,
        "folds": classify_recipe.classify.cv.k,
        "class_counts": runs[0]["class_counts"],
        "pretrain_seconds": float(np.mean([r["pretrain_seconds"] for r in runs])),
        "start_auc": float(np.mean([r["start"]["auc"] for r in runs])),
        "continued_auc": float(np.mean([r["continued"]["auc"] for r in runs])),
        "smallest_margin": min(r["continued_minus_start"] for r in runs),
        "required_margin": REQUIRED_MARGIN,
        "runs": runs,
    }
    atomic_write_text(args.results, json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        replace_section(README, SECTION, markdown_section(result))
    print(
        f"AUC over {len(runs)} seed(s): start {result['start_auc']:.3f}, continued "
        f"{result['continued_auc']:.3f}; smallest margin {result['smallest_margin']:+.3f}"
    )
    if result["smallest_margin"] < REQUIRED_MARGIN:
        print(
            f"FAILED: continued training must beat its start by {REQUIRED_MARGIN} AUC",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
