"""Does pretraining help? Linear probe of a pretrained vs a randomly initialised backbone on phantoms.

Protocol:
1. Generate two phantom sets with ``voxssl.data.phantoms``: ``--pretrain-cases`` for pretraining
   (their labels are never used) and ``--probe-cases`` held-out phantoms (another seed) for probing.
2. Preprocess both into one cache with recipes/demo.yaml's preprocessing.
3. Pretrain recipes/demo.yaml's model with its ``pretrain`` section (the demo settings) on the
   first set only (``pretrain.sources``).
4. Linear-probe (recipes/probe_demo.yaml: 2-fold CV on the held-out set, same steps, lr, seed and
   folds) the pretrained backbone and the same architecture randomly initialised.
5. With ``--seeds``, repeat 3-4 per seed (both recipes' ``seed``: pretraining initialisation and
   sampling, the random-init backbone, the heads and their patches; the phantoms and folds stay).
6. Report mean Dice (per organ and overall: mean over the test cases of both folds, then over the
   seeds) to benchmarks/results/phantom_probe.json and as a section of benchmarks/README.md. Exit 1
   unless the pretrained probe beats random init by ``REQUIRED_MARGIN`` with every seed.

    .venv/bin/python benchmarks/phantom_probe.py                  # ~16 CPU minutes per seed on 2 cores
    .venv/bin/python benchmarks/phantom_probe.py --seeds 0 1 --work /tmp/pp
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
RESULTS = REPO / "benchmarks" / "results" / "phantom_probe.json"
README = REPO / "benchmarks" / "README.md"
SECTION = "phantom_probe"  # its section of benchmarks/README.md
#: How much better (mean Dice, absolute) the pretrained probe must be; below it the script exits 1.
REQUIRED_MARGIN = 0.10


def build_recipes(work: Path, args: argparse.Namespace, seed: int | None = None):
    from demo_recipes import folder_source, recipe_over_folders

    from voxssl.config.recipe import recipe_from_dict

    sources = [folder_source(name, work / name) for name in ("pretrain", "heldout")]
    name = "pretrain" if seed is None else f"pretrain-seed{seed}"
    seeded = {} if seed is None else {"seed": seed}  # initialisation and pair sampling
    demo = recipe_over_folders("demo.yaml", work, sources, 2, name=name, **seeded)
    demo["pretrain"]["sources"] = ["pretrain"]
    if args.pretrain_steps:
        demo["pretrain"]["steps"] = args.pretrain_steps
    # seeded: the heads, the random-init backbone and the patch sampling (not the folds)
    probe = recipe_over_folders("probe_demo.yaml", work, sources, 2, **seeded)
    probe["probe"]["source"] = "heldout"
    if args.probe_steps:
        probe["probe"]["steps"] = args.probe_steps
    if args.loss:
        probe["probe"]["loss"] = args.loss
    if args.folds is not None:
        probe["probe"]["cv"]["folds"] = args.folds
    for item in args.probe_set or []:  # e.g. lr=0.01 (values parsed as YAML)
        import yaml

        key, _, value = item.partition("=")
        probe["probe"][key] = yaml.safe_load(value)
    return recipe_from_dict(demo, "recipes/demo.yaml (benchmark)"), recipe_from_dict(
        probe, "recipes/probe_demo.yaml (benchmark)"
    )


def write_phantoms(folder: Path, n: int, seed: int, prefix: str) -> None:
    """``n`` CT phantoms as ``images/<prefix>_NNN.nii.gz`` + ``labels/`` (orientation drawn per case).

    Not ``write_phantom_dataset``: its ``phantom_ct_NNNN`` names end like nnU-Net channel suffixes
    (``_0000``), which the folder adapter groups into one multi-channel case (reported).
    """
    from voxssl.data.phantoms import ORIENTATIONS, case_seeds, generate_phantom, write_phantom

    for index in range(n):
        phantom_seed, orientation_draw = case_seeds(seed, index)
        name = f"{prefix}_{index:03d}.nii.gz"
        write_phantom(
            generate_phantom(phantom_seed, "ct"),
            folder / "images" / name,
            folder / "labels" / name,
            orientation=ORIENTATIONS[orientation_draw % len(ORIENTATIONS)],
        )


def organ_means(summary: dict) -> dict[str, float | None]:
    return {organ: entry["dice_over_cases"]["mean"] for organ, entry in summary["organs"].items()}


def mean_over_seeds(runs: list[dict], arm: str) -> dict:
    """Mean Dice (overall and per organ) of one arm (``pretrained`` / ``random_init``) over the seeds."""
    organs = runs[0][arm]["organs"]
    per_organ = {}
    for organ in organs:
        values = [
            run[arm]["organs"][organ] for run in runs if run[arm]["organs"][organ] is not None
        ]
        per_organ[organ] = float(np.mean(values)) if values else None
    return {
        "mean_dice": float(np.mean([run[arm]["mean_dice"] for run in runs])),
        "organs": per_organ,
    }


def markdown_section(result: dict) -> str:
    pre, rnd = result["pretrained"], result["random_init"]
    seeds = [run["seed"] for run in result["runs"]]
    lines = [
        "## Linear probe on phantoms: pretrained vs random init (`benchmarks/phantom_probe.py`)",
        "",
        f"Pretraining: recipes/demo.yaml, {result['pretrain_steps']} steps on {result['pretrain_cases']} unlabelled "
        f"phantoms ({_seconds(result['pretrain_seconds'])} per run). Probe: recipes/probe_demo.yaml, linear head, "
        f"{result['probe_steps']} steps of batch {result.get('probe_batch_size')} x {_shape(result.get('probe_patch_size'))}, "
        f"lr {result['probe_lr']} ({result.get('probe_lr_schedule', 'constant')}), loss {result['probe_loss']}, "
        f"feature cache {result.get('feature_cache')}, 2-fold CV on {result['probe_cases']} held-out phantoms (folds run: "
        f"{result['folds']}). Seeds {', '.join(map(str, seeds))} (each seed: its own pretraining run, random-init "
        f"backbone and probe heads; same phantoms and folds). Dice % (mean over the test cases, then over the seeds). "
        f"{result['machine']}, {result['date']}.",
        "",
        "| organ | pretrained | random init |",
        "|---|---|---|",
    ]
    for organ in pre["organs"]:
        lines.append(f"| {organ} | {_pct(pre['organs'][organ])} | {_pct(rnd['organs'][organ])} |")
    lines.append(f"| **mean** | **{_pct(pre['mean_dice'])}** | **{_pct(rnd['mean_dice'])}** |")
    lines += ["", "| seed | pretrained | random init | margin |", "|---|---|---|---|"]
    for run in result["runs"]:
        lines.append(
            f"| {run['seed']} | {_pct(run['pretrained']['mean_dice'])} | {_pct(run['random_init']['mean_dice'])} "
            f"| {100 * run['pretrained_minus_random']:+.1f} |"
        )
    margin = result["smallest_margin"]
    lines += [
        "",
        f"Smallest margin over the seeds: {100 * margin:+.1f} Dice points (required: at least "
        f"{100 * REQUIRED_MARGIN:.0f}).",
    ]
    if margin < REQUIRED_MARGIN:
        lines += [
            "",
            "**FAILED**: the pretrained probe does not clearly beat random init. That is a defect in "
            "pretraining, sampling or the probe (docs/pretraining.md lists what to check), not a result.",
        ]
    return "\n".join(lines)


def _seconds(value) -> str:
    return "reused backbone" if value is None else f"{value:.0f} s"


def _shape(values) -> str:
    return "x".join(str(v) for v in values) if values else "?"


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def run_seed(work: Path, args: argparse.Namespace, seed: int | None) -> tuple[dict, object, object]:
    """Pretrain (unless ``--backbone``) and probe both arms with one seed; ``(run, pretrain recipe, probe recipe)``."""
    from voxssl.eval.protocol import RANDOM_INIT, run_downstream
    from voxssl.train.loop import pretrain

    pretrain_recipe, probe_recipe = build_recipes(work, args, seed)
    started = time.perf_counter()
    if args.backbone is None:
        trained = pretrain(pretrain_recipe, progress=True)
        if trained.backbone_path is None:
            raise SystemExit("pretraining did not write a backbone")
        backbone, last_loss = (
            trained.backbone_path,
            trained.losses[max(trained.losses)] if trained.losses else None,
        )
    else:
        backbone, last_loss = args.backbone, None
    pretrain_seconds = time.perf_counter() - started if args.backbone is None else None
    run = {
        "seed": probe_recipe.seed,
        "pretrain_seconds": pretrain_seconds,
        "final_pretrain_loss": last_loss,
        "pretrained_backbone": str(backbone),
    }
    for label, weights in (("pretrained", str(backbone)), ("random_init", RANDOM_INIT)):
        probe_recipe.name = f"probe-{label}-seed{probe_recipe.seed}"
        started = time.perf_counter()
        summary = run_downstream(probe_recipe, probe_recipe.probe, weights, "linear-probe")
        run[label] = {
            "mean_dice": summary["mean_dice"]["over_cases"]["mean"],
            "mean_dice_std_over_cases": summary["mean_dice"]["over_cases"]["std"],
            "mean_dice_over_folds": summary["mean_dice"]["over_folds"]["mean"],
            "organs": organ_means(summary),
            "seconds": time.perf_counter() - started,
        }
    run["pretrained_minus_random"] = (
        run["pretrained"]["mean_dice"] - run["random_init"]["mean_dice"]
    )
    print(
        f"seed {run['seed']}: mean Dice pretrained {100 * run['pretrained']['mean_dice']:.1f}, "
        f"random init {100 * run['random_init']['mean_dice']:.1f}",
        flush=True,
    )
    return run, pretrain_recipe, probe_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, default=None, help="Working folder (default: a temporary one)."
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="Repeat with these seeds of both recipes (default: the recipes' own seed, once). "
        "The phantoms and the folds stay the same.",
    )
    parser.add_argument("--pretrain-cases", type=int, default=8)
    parser.add_argument("--probe-cases", type=int, default=8)
    parser.add_argument(
        "--pretrain-steps", type=int, default=0, help="0: recipes/demo.yaml's value."
    )
    parser.add_argument(
        "--probe-steps", type=int, default=0, help="0: recipes/probe_demo.yaml's value."
    )
    parser.add_argument(
        "--loss", choices=["bce", "ce"], default=None, help="Probe loss (default: the recipe's)."
    )
    parser.add_argument(
        "--folds", type=int, nargs="+", default=None, help="Probe only these folds (default: both)."
    )
    parser.add_argument(
        "--probe-set",
        action="append",
        metavar="KEY=VALUE",
        help="Override a key of the probe section, e.g. --probe-set lr=0.01 (repeatable).",
    )
    parser.add_argument(
        "--backbone",
        type=Path,
        default=None,
        help="Reuse this pretrained backbone (skip pretraining).",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where to write the JSON.")
    parser.add_argument(
        "--no-readme", action="store_true", help="Do not touch benchmarks/README.md."
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from voxssl.data.pipeline import run_preprocess
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.utils.markdown_section import replace_section

    with tempfile.TemporaryDirectory(prefix="phantom_probe_") as tmp:
        work = args.work or Path(tmp)
        write_phantoms(work / "pretrain", args.pretrain_cases, seed=0, prefix="pretrain")
        write_phantoms(work / "heldout", args.probe_cases, seed=1, prefix="heldout")
        if not run_preprocess(build_recipes(work, args)[0], progress=False).ok:
            raise SystemExit("preprocessing failed")
        runs = []
        for seed in args.seeds or [None]:
            run, pretrain_recipe, probe_recipe = run_seed(work, args, seed)
            runs.append(run)
    pretrain_seconds = [
        run["pretrain_seconds"] for run in runs if run["pretrain_seconds"] is not None
    ]
    result = {
        "benchmark": "phantom_probe",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} CPU x{os.cpu_count()}",
        "pretrain_cases": args.pretrain_cases,
        "probe_cases": args.probe_cases,
        "pretrain_steps": pretrain_recipe.pretrain.steps,
        "probe_steps": probe_recipe.probe.steps,
        "probe_lr": probe_recipe.probe.lr,
        "probe_loss": probe_recipe.probe.loss,
        "probe_lr_schedule": probe_recipe.probe.lr_schedule,
        "probe_batch_size": probe_recipe.probe.batch_size,
        "probe_patch_size": list(probe_recipe.probe.patch_size),
        "feature_cache": probe_recipe.probe.feature_cache,
        "folds": "all" if args.folds is None else args.folds,
        "pretrain_seconds": float(np.mean(pretrain_seconds)) if pretrain_seconds else None,
        "pretrained": mean_over_seeds(runs, "pretrained"),
        "random_init": mean_over_seeds(runs, "random_init"),
        "smallest_margin": min(run["pretrained_minus_random"] for run in runs),
        "runs": runs,
    }
    atomic_write_text(args.results, json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        replace_section(README, SECTION, markdown_section(result))
    print(
        f"mean Dice over {len(runs)} seed(s): pretrained {100 * result['pretrained']['mean_dice']:.1f}, "
        f"random init {100 * result['random_init']['mean_dice']:.1f}; smallest margin "
        f"{100 * result['smallest_margin']:+.1f}"
    )
    if result["smallest_margin"] < REQUIRED_MARGIN:
        print(
            f"FAILED: pretrained must beat random init by {100 * REQUIRED_MARGIN:.0f} Dice points with every seed",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
