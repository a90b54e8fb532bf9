"""``voxssl classify train | eval``: image- and slice-level classification with a DINOv2 ViT, k-fold AUC."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import (
    OVERRIDES_OPTION,
    QUIET_OPTION,
    Group,
    command,
    recipe_argument,
)

classify_app = typer.Typer(
    name="classify",
    help="Classification of 2D images or cache slices with a DINOv2 ViT (fine-tune or linear "
    "probe), k-fold cross-validation, AUC mean +- std over folds (MediDino's protocol).",
    no_args_is_help=True,
    cls=Group,
)


def _load(recipe: Path, overrides: list[str] | None, verb: str):
    from voxssl.config.recipe import load_recipe, require_section

    loaded = load_recipe(recipe, overrides or [])
    return loaded, require_section(loaded, "classify", verb)


def _progress():
    from functools import partial

    from tqdm import tqdm

    return partial(tqdm, dynamic_ncols=True, leave=False, unit="epoch")


def _print_summary(report: dict, where: Path) -> None:
    over = report["summary"]["auc_over_folds"]
    if over["mean"] is None:
        typer.echo("AUC: undefined (a test fold holds a single class)")
    else:
        typer.echo(f"AUC over {over['n']} fold(s): {over['mean']:.4f} +- {over['std']:.4f}")
    if len(report["classes"]) > 2:
        for name, stats in report["summary"]["per_class_over_folds"].items():
            if stats["mean"] is not None:
                typer.echo(f"  {name}: {stats['mean']:.4f} +- {stats['std']:.4f}")
    typer.echo(f"results in {where / 'results.md'} and {where / 'results.json'}")


def train(
    recipe: Path = recipe_argument("a `classify`"),
    weights: str = typer.Option(
        ...,
        "--weights",
        metavar="WEIGHTS",
        help="Encoder to start from: a `voxssl dinov2 pretrain` run folder or encoder, a release, a "
        "Hugging Face DINOv2 folder or safetensors, or dinov2:small|base|large|giant (released).",
    ),
    quiet: bool = QUIET_OPTION,
    overrides: list[str] | None = OVERRIDES_OPTION,
) -> None:
    """k-fold training: per fold the best-validation-loss model, its test AUC; the report in RUN_DIR."""
    loaded, config = _load(recipe, overrides, "classify train")

    from voxssl.classify.protocol import run_classify

    report = run_classify(loaded, config, weights, progress=None if quiet else _progress())
    _print_summary(report, loaded.run_dir)


def evaluate(
    recipe: Path = recipe_argument("a `classify`"),
    weights: Path = typer.Option(
        ...,
        "--weights",
        metavar="PATH",
        help="A `classify train` run folder (each fold's model on its test fold) or one fold's "
        "model.safetensors (scored on every image of the recipe's data).",
    ),
    out: Path | None = typer.Option(
        None, "--out", metavar="DIR", help="Output folder (default: the run folder's eval/)."
    ),
    overrides: list[str] | None = OVERRIDES_OPTION,
) -> None:
    """Score trained classifiers and write their AUC report."""
    loaded, config = _load(recipe, overrides, "classify eval")

    from voxssl.classify.protocol import evaluate_classify

    report_dir = out or (weights / "eval" if weights.is_dir() else loaded.run_dir / "eval")
    report = evaluate_classify(loaded, config, str(weights), report_dir)
    _print_summary(report, report_dir)


def register(app: typer.Typer) -> None:
    command(
        classify_app,
        "train",
        train,
        [
            "voxssl classify train recipes/classify_demo.yaml --weights runs/dinov2-demo",
            "voxssl classify train recipes/paper/medidino_acl.yaml --weights dinov2:small",
        ],
    )
    command(
        classify_app,
        "eval",
        evaluate,
        ["voxssl classify eval recipes/classify_demo.yaml --weights runs/classify-demo"],
    )
    app.add_typer(classify_app, name="classify")


__all__ = ["register"]
