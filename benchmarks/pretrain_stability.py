"""Loss trajectory of the paper model over a few hundred CPU steps: does pretraining diverge?

Protocol: CT phantoms written into a temporary cache (as benchmarks/pretrain_throughput.py does),
the real loop (:func:`voxssl.train.loop.pretrain`) on a recipe (default recipes/ct.yaml: the
hierarchical paper model, InfoNCE + 10 x reconstruction + 0.5 x equivariance, Adam 3e-4, gradient
clipping at 1) with the patch size and pairs per step reduced to fit a CPU (``--patch``,
``--pairs``); every step's total loss, each loss term and the gradient norm before clipping are
recorded. A run is flagged as diverged when its loss becomes non-finite or ends (the mean of its
last quarter) above ``--divergence-factor`` times its first loss; the script then exits with
status 1 (after writing its results), so a divergence cannot pass unnoticed. A spike the loss
comes back from is reported beside the verdict (peak, step, ratio) but is not a divergence: the
rule lives in benchmarks/pretrain_throughput.py, shared by both scripts.

Usage::

    .venv/bin/python benchmarks/pretrain_stability.py --steps 300 --label recipe
    .venv/bin/python benchmarks/pretrain_stability.py --steps 300 --label other --set pretrain.lr=1e-4

Results are merged into benchmarks/results/pretrain_stability.json under ``--label``; the
README section ``pretrain_stability`` shows every label's trajectory at a few steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pretrain_stability.json"
README = REPO / "benchmarks" / "README.md"
SECTION = "pretrain_stability"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pretrain_throughput import PHANTOM_SHAPE, divergence, spike  # noqa: E402

from voxssl.data.phantoms.cache import write_phantom_cache  # noqa: E402


def run(args: argparse.Namespace, cache: Path, out_dir: Path) -> dict:
    from voxssl.config.recipe import load_recipe
    from voxssl.train.loop import pretrain

    overrides = [
        f"data.cache_dir={cache}",
        f"output_dir={out_dir}",
        f"name=stability-{args.label}",
        f"pretrain.steps={args.steps}",
        f"pretrain.checkpoint_every={args.steps}",
        f"pretrain.log_every={args.steps}",
        f"pretrain.image_every={args.steps}",
        f"pretrain.patch_size=[{','.join(str(p) for p in args.patch)}]",
        f"pretrain.pairs_per_step={args.pairs}",
        f"pretrain.pairs_per_volume={args.pairs}",
        f"pretrain.num_workers={args.num_workers}",
        f"pretrain.cpu_threads={args.threads}",
        "pretrain.device=cpu",
        *args.set,
    ]
    recipe = load_recipe(Path(args.recipe), overrides)
    started = time.perf_counter()
    error = None
    try:
        result = pretrain(recipe, progress=args.progress)
        losses = [result.losses[s] for s in sorted(result.losses)]
        terms = {
            name: [result.terms[s][name] for s in sorted(result.terms)]
            for name in result.terms[min(result.terms)]
        }
        grad_norms = [result.grad_norms[s] for s in sorted(result.grad_norms)]
    except FloatingPointError as err:  # the loop stops at a non-finite loss
        error, losses, terms, grad_norms = str(err), [], {}, []
    cfg = recipe.pretrain
    reason = error or divergence(losses, args.divergence_factor)
    return {
        "label": args.label,
        "recipe": str(Path(args.recipe).resolve().relative_to(REPO)),
        "overrides": list(args.set),
        "model": {
            "preset": recipe.model.preset,
            "base_channels": recipe.model.base_channels,
            "num_levels": recipe.model.num_levels,
        },
        "patch_size": list(cfg.patch_size),
        "pairs_per_step": cfg.pairs_per_step,
        "positives_per_pair": cfg.positives_per_pair,
        "lr": cfg.lr,
        "weights": {
            "infonce": cfg.infonce_weight,
            "reconstruction": cfg.reconstruction_weight,
            "equivariance": cfg.equivariance.weight,
        },
        "steps": len(losses),
        "losses": losses,
        "terms": terms,
        "grad_norms": grad_norms,
        "diverged": reason is not None,
        "divergence": reason,
        "spike": spike(losses, args.divergence_factor),
        "divergence_factor": args.divergence_factor,
        "wall_s": time.perf_counter() - started,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def checkpoints(n: int) -> list[int]:
    marks = [1, 2, 3, 4, 5, 7, 10, 25, 50, 100, 150, 200, 250, 300, 500, 1000]
    return [m for m in marks if m <= n] + ([n] if n not in marks else [])


def markdown_section(results: dict) -> str:
    lines = [
        "## Pretraining stability: the paper model's loss over a few hundred CPU steps "
        "(`benchmarks/pretrain_stability.py`)",
        "",
        "Protocol in the script's docstring: CT phantoms, the real loop on recipes/ct.yaml (the "
        "hierarchical paper model and objective) with the patch and pairs per step reduced for a "
        "CPU; every step's loss terms are recorded and a run whose loss ends (mean of its last "
        "quarter) above the divergence factor times its first loss, or becomes non-finite, is "
        "flagged (and the script fails); a spike the loss comes back from is reported. Raw curves: "
        "`benchmarks/results/pretrain_stability.json`.",
        "",
    ]
    for label, row in results.items():
        steps = checkpoints(row["steps"])
        lines += [
            f"**{label}**: patch {'x'.join(map(str, row['patch_size']))}, "
            f"{row['pairs_per_step']} pair(s)/step, lr {row['lr']:g}, overrides "
            f"{', '.join(row['overrides']) or 'none'}; "
            + (
                f"**diverged**: {row['divergence']}"
                if row["diverged"]
                else f"no divergence (factor {row['divergence_factor']:g})"
            )
            + (f"; spike: {row['spike']}" if row.get("spike") else "")
            + f"; {row['wall_s'] / 60:.0f} min, load average {row['load_average'][0]:.1f}.",
            "",
            "| step | " + " | ".join(str(s) for s in steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        series = {"total": row["losses"], **row["terms"], "grad norm": row["grad_norms"]}
        for name, values in series.items():
            if values:
                cells = " | ".join(f"{values[s - 1]:.4g}" for s in steps)
                lines.append(f"| {name} | {cells} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "ct.yaml"))
    parser.add_argument("--label", default="recipe")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 64, 16])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--phantoms", type=int, default=4)
    parser.add_argument("--divergence-factor", type=float, default=2.0)
    parser.add_argument("--set", action="append", default=[], help="recipe override key=value")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="voxssl-stability-") as tmp:
        cache = Path(tmp) / "cache"
        write_phantom_cache(cache, args.phantoms, PHANTOM_SHAPE)
        row = run(args, cache, Path(tmp) / "runs")
    print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "terms", "grad_norms")}))
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    results[args.label] = row
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.utils.markdown_section import replace_section

    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    if not args.no_readme:
        replace_section(README, SECTION, markdown_section(results))
    if row["diverged"]:
        print(f"DIVERGED: {row['divergence']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
