"""``voxssl few-shot train | eval | segment``: 2D few-shot segmentation (SSL-ALPNet / DINOv2-ALPNet)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from voxssl.commands.common import (
    OVERRIDES_OPTION,
    QUIET_OPTION,
    Group,
    command,
    recipe_argument,
)

fewshot_app = typer.Typer(
    name="few-shot",
    help="2D few-shot segmentation with ALPNet: self-supervised superpixel training, the 1-shot "
    "benchmark protocol, and 1-shot segmentation of a new structure on your scans.",
    no_args_is_help=True,
    cls=Group,
)

GROUP_OPTION = typer.Option(
    None, "--group", metavar="INDEX", help="Only this organ group (repeatable)."
)
FOLD_OPTION = typer.Option(None, "--fold", metavar="INDEX", help="Only this fold (repeatable).")


def _progress(quiet: bool):
    if quiet:
        return None
    from functools import partial

    from tqdm import tqdm

    return partial(tqdm, dynamic_ncols=True)


def _load(recipe: Path, overrides: list[str] | None, verb: str):
    from voxssl.config.recipe import load_recipe, require_section

    loaded = load_recipe(recipe, overrides or [])
    return loaded, require_section(loaded, "fewshot", verb)


def train(
    recipe: Path = recipe_argument("`data` and `fewshot`"),
    group: list[int] | None = GROUP_OPTION,
    fold: list[int] | None = FOLD_OPTION,
    overrides: list[str] | None = OVERRIDES_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Compute superpixels (cached, resumable), then train one model per (organ group, fold).

    Models already trained are skipped, so re-running continues an interrupted run. The run folder
    is created only once the encoder's weights have loaded.
    """
    loaded, config = _load(recipe, overrides, "few-shot train")

    from voxssl.config.loader import to_dict
    from voxssl.config.recipe import save_resolved
    from voxssl.fewshot.experiment import train_protocol

    run_dir = loaded.run_dir
    summaries = train_protocol(
        loaded.data.cache_dir,
        config,
        run_dir / "models",
        group,
        fold,
        _progress(quiet),
        preprocess=to_dict(loaded.preprocess),
        on_start=lambda: save_resolved(loaded, run_dir),
    )
    for name, summary in summaries.items():
        typer.echo(
            f"{name}: loss {summary.get('loss', float('nan')):.4f}, "
            f"{summary['episodes_per_s']:.2f} episodes/s -> {run_dir / 'models' / name}.safetensors"
        )
    typer.echo(f"models in {run_dir / 'models'}")


def evaluate(
    recipe: Path = recipe_argument("`data` and `fewshot`"),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        metavar="PATH",
        help="Folder of <group>-<fold>.safetensors (default: RUN_DIR/models), or one file for every fold.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        metavar="DIR",
        help="Output folder (default: RUN_DIR/fewshot-eval-cca<cca>, plus -ttt with test-time training).",
    ),
    group: list[int] | None = GROUP_OPTION,
    fold: list[int] | None = FOLD_OPTION,
    overrides: list[str] | None = OVERRIDES_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """The 1-way 1-shot C-chunk protocol: Dice per scan, results.json/.md and NIfTI predictions."""
    loaded, config = _load(recipe, overrides, "few-shot eval")

    from voxssl.config.recipe import save_resolved
    from voxssl.fewshot.evaluate import evaluate_protocol

    tag = f"fewshot-eval-cca{config.eval.cca}{'-ttt' if config.eval.ttt.enabled else ''}"
    out_dir = out or loaded.run_dir / tag
    save_resolved(loaded, out_dir)
    results = evaluate_protocol(
        loaded.data.cache_dir,
        config,
        weights or loaded.run_dir / "models",
        out_dir,
        group,
        fold,
        _progress(quiet),
    )
    per_organ = ", ".join(f"{k} {100 * v:.1f}" for k, v in results.per_organ().items())
    typer.echo(f"Dice % (mean over scans): {per_organ}; mean {100 * results.mean():.1f}")
    typer.echo(f"results in {out_dir / 'results.json'} and {out_dir / 'results.md'}")


def segment(
    support: tuple[Path, Path] = typer.Option(
        ...,
        "--support",
        metavar="IMAGE LABEL",
        help="Support IMAGE and its LABEL (NIfTI or DICOM folder).",
    ),
    query: list[Path] = typer.Option(
        ..., "--query", metavar="SCAN", help="Query scan (repeat --query for several)."
    ),
    out: Path = typer.Option(
        ..., "--out", metavar="DIR", help="Folder for <query>_fewshot.nii.gz."
    ),
    weights: Path = typer.Option(
        ..., "--weights", metavar="FILE", help="A trained few-shot .safetensors file."
    ),
    modality: Literal["ct", "mr"] = typer.Option(..., "--modality", help="Modality of the scans."),
    label_value: int | None = typer.Option(
        None,
        "--label-value",
        metavar="ID",
        help="Label id of the structure (default: every nonzero voxel).",
    ),
    cca: Literal["none", "2d", "3d"] = typer.Option(
        "3d", "--cca", help="Connected-component post-processing."
    ),
    recipe: Path | None = typer.Option(
        None,
        "--recipe",
        exists=True,
        dir_okay=False,
        metavar="RECIPE",
        help="Take the preprocessing from this recipe instead of the weights.",
    ),
    device: Literal["auto", "cpu", "cuda"] = typer.Option("auto", "--device", help="Where to run."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """1-shot segmentation of a new structure: one labelled scan guides the segmentation of new scans."""
    preprocess = None
    if recipe is not None:
        from voxssl.config.recipe import load_recipe

        preprocess = load_recipe(recipe).preprocess

    from voxssl.fewshot.segment import segment_scans

    written = segment_scans(
        weights,
        support[0],
        support[1],
        list(query),
        out,
        modality,
        label_value,
        cca,
        preprocess,
        device,
        _progress(quiet),
    )
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    command(
        fewshot_app,
        "train",
        train,
        [
            "voxssl few-shot train recipes/fewshot_abd_ct.yaml",
            "voxssl few-shot train recipes/fewshot_demo.yaml --group 0 --fold 0",
        ],
    )
    command(
        fewshot_app,
        "eval",
        evaluate,
        [
            "voxssl few-shot eval recipes/fewshot_abd_ct.yaml",
            "voxssl few-shot eval recipes/fewshot_abd_ct.yaml --set fewshot.eval.ttt.enabled=true",
        ],
    )
    command(
        fewshot_app,
        "segment",
        segment,
        [
            "voxssl few-shot segment --support ct1.nii.gz ct1_liver.nii.gz --query ct2.nii.gz "
            "--weights runs/fewshot/models/fold0.safetensors --modality ct --out seg/",
        ],
    )
    app.add_typer(fewshot_app, name="few-shot")


__all__ = ["register"]
