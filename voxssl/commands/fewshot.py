"""``voxssl few-shot train | eval | segment``: 2D few-shot segmentation (SSL-ALPNet / DINOv2-ALPNet)."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import OVERRIDES_OPTION

fewshot_app = typer.Typer(
    name="few-shot",
    help="2D few-shot segmentation with ALPNet: self-supervised superpixel training, the 1-shot "
    "benchmark protocol, and 1-shot segmentation of a new structure on your scans.",
    no_args_is_help=True,
)


def _progress():
    from functools import partial

    from tqdm import tqdm

    return partial(tqdm, dynamic_ncols=True)


def _load(recipe: Path, overrides: list[str] | None, verb: str):
    from voxssl.config.recipe import load_recipe, require_section

    loaded = load_recipe(recipe, overrides or [])
    return loaded, require_section(loaded, "fewshot", verb)


@fewshot_app.command("train")
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML with data and fewshot sections."),
    group: list[int] | None = typer.Option(
        None, "--group", help="Train only these organ groups (index)."
    ),
    fold: list[int] | None = typer.Option(None, "--fold", help="Train only these folds."),
    overrides: list[str] | None = OVERRIDES_OPTION,
) -> None:
    """Compute superpixels (cached, resumable), then train one model per (organ group, fold)."""
    from voxssl.config.loader import to_dict
    from voxssl.config.recipe import save_resolved
    from voxssl.fewshot.experiment import train_protocol

    loaded, config = _load(recipe, overrides, "few-shot train")
    run_dir = loaded.run_dir
    save_resolved(loaded, run_dir)
    summaries = train_protocol(
        loaded.data.cache_dir,
        config,
        run_dir / "models",
        group,
        fold,
        _progress(),
        preprocess=to_dict(loaded.preprocess),
    )
    for name, summary in summaries.items():
        typer.echo(
            f"{name}: loss {summary.get('loss', float('nan')):.4f}, "
            f"{summary['episodes_per_s']:.2f} episodes/s -> {run_dir / 'models' / name}.safetensors"
        )
    typer.echo(f"models in {run_dir / 'models'}")


@fewshot_app.command("eval")
def evaluate(
    recipe: Path = typer.Argument(..., help="Recipe YAML with data and fewshot sections."),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        help="Folder of <group>-<fold>.safetensors (default: RUN_DIR/models), or one file for every fold.",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: RUN_DIR/fewshot-eval-<cca>[-ttt])."
    ),
    group: list[int] | None = typer.Option(
        None, "--group", help="Evaluate only these organ groups."
    ),
    fold: list[int] | None = typer.Option(None, "--fold", help="Evaluate only these folds."),
    overrides: list[str] | None = OVERRIDES_OPTION,
) -> None:
    """The 1-way 1-shot C-chunk protocol: Dice per scan, results.json/.md and NIfTI predictions."""
    from voxssl.config.recipe import save_resolved
    from voxssl.fewshot.evaluate import evaluate_protocol

    loaded, config = _load(recipe, overrides, "few-shot eval")
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
        _progress(),
    )
    per_organ = ", ".join(f"{k} {100 * v:.2f}" for k, v in results.per_organ().items())
    typer.echo(f"Dice % (mean over scans): {per_organ}; mean {100 * results.mean():.2f}")
    typer.echo(f"results in {out_dir / 'results.json'} and {out_dir / 'results.md'}")


@fewshot_app.command("segment")
def segment(
    support: tuple[Path, Path] = typer.Option(
        ..., "--support", help="Support IMAGE and its LABEL (NIfTI or DICOM folder)."
    ),
    query: list[Path] = typer.Option(
        ..., "--query", help="Query scan (repeat --query for several)."
    ),
    out: Path = typer.Option(..., "--out", help="Folder for <query>_fewshot.nii.gz."),
    weights: Path = typer.Option(..., "--weights", help="A trained few-shot .safetensors file."),
    modality: str = typer.Option(..., "--modality", help="ct or mr."),
    label_value: int | None = typer.Option(
        None, "--label-value", help="Label id of the structure (default: every nonzero voxel)."
    ),
    cca: str = typer.Option(
        "3d", "--cca", help="Connected-component post-processing: none, 2d or 3d."
    ),
    recipe: Path | None = typer.Option(
        None, "--recipe", help="Take the preprocessing from this recipe instead of the weights."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
) -> None:
    """1-shot segmentation of a new structure: one labelled scan guides the segmentation of new scans."""
    from voxssl.errors import ConfigError
    from voxssl.fewshot.segment import segment_scans

    if modality not in ("ct", "mr"):
        raise ConfigError(f"--modality must be ct or mr, got {modality!r}")
    if cca not in ("none", "2d", "3d"):
        raise ConfigError(f"--cca must be none, 2d or 3d, got {cca!r}")
    preprocess = None
    if recipe is not None:
        from voxssl.config.recipe import load_recipe

        preprocess = load_recipe(recipe).preprocess
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
        _progress(),
    )
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.add_typer(fewshot_app, name="few-shot")


__all__ = ["register"]
