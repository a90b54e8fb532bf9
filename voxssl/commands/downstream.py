"""``voxssl linear-probe``, ``voxssl fine-tune`` and ``voxssl predict``."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import OVERRIDES_OPTION

WEIGHTS_HELP = (
    "Backbone weights: a voxssl .safetensors file, a released model name (see `voxssl weights list`), "
    "or 'random' for the recipe's architecture randomly initialised (the baseline)."
)


def linear_probe(
    recipe: Path = typer.Argument(
        ..., help="Recipe YAML with `data`, `preprocess` and `probe` sections."
    ),
    weights: str = typer.Option(..., "--weights", "-w", help=WEIGHTS_HELP),
    overrides: list[str] = OVERRIDES_OPTION,
) -> None:
    """Train a head on the frozen backbone over the recipe's folds; write Dice per organ and case."""
    _run(recipe, weights, overrides, section="probe", protocol="linear-probe")


def fine_tune(
    recipe: Path = typer.Argument(
        ..., help="Recipe YAML with `data`, `preprocess` and `finetune` sections."
    ),
    weights: str = typer.Option(
        None, "--weights", "-w", help=WEIGHTS_HELP + " Not needed with --from-scratch."
    ),
    from_scratch: bool = typer.Option(
        False,
        "--from-scratch",
        help="Random initialisation, same budget (sets finetune.from_scratch=true): the baseline. With --weights "
        "and no `model` section in the recipe, the random backbone has the architecture of those weights.",
    ),
    overrides: list[str] = OVERRIDES_OPTION,
) -> None:
    """Fine-tune backbone + head (backbone frozen first, then its lr ramps up) over the recipe's folds."""
    from voxssl.errors import ConfigError

    extra = ["finetune.from_scratch=true"] if from_scratch else []
    if weights is None and not from_scratch:
        raise ConfigError("fine-tune needs --weights (or --from-scratch)")
    _run(
        recipe,
        weights or "random",
        list(overrides or []) + extra,
        section="finetune",
        protocol="fine-tune",
    )


def _run(
    recipe_path: Path, weights: str, overrides: list[str] | None, section: str, protocol: str
) -> None:
    from voxssl.config.recipe import load_recipe, require_section
    from voxssl.eval.protocol import run_downstream

    recipe = load_recipe(recipe_path, overrides)
    cfg = require_section(recipe, section, protocol)
    summary = run_downstream(recipe, cfg, weights, protocol)  # type: ignore[arg-type]
    for label, subset in summary["subsets"].items():  # low-data subsets: each on its own
        mean = subset["mean_dice"]
        training = "" if len(summary["subsets"]) == 1 else f" ({label} training cases per fold)"
        typer.echo(
            f"{protocol}{training}: mean Dice {100 * mean['over_cases']['mean']:.1f} ± "
            f"{100 * mean['over_cases']['std']:.1f} % over {mean['over_cases']['n']} test case(s)"
        )
    typer.echo(f"results in {recipe.run_dir}/results.md")


def predict(
    images: list[Path] = typer.Argument(..., help="NIfTI files or DICOM series folders."),
    weights: str = typer.Option(
        ..., "--weights", "-w", help="A model.safetensors written by linear-probe / fine-tune."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder for <name>_seg.nii.gz label maps."
    ),
    device: str = typer.Option("auto", help="auto | cpu | cuda"),
    interpolation: str = typer.Option(
        "linear",
        help="Back to the scan's grid: 'linear' (probabilities, then decide) or 'nearest' (label).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    no_preview: bool = typer.Option(
        False, "--no-preview", help="Do not write the <name>_seg.png preview beside each label map."
    ),
    body_mask: bool | None = typer.Option(
        None,
        "--body-mask/--no-body-mask",
        help="Keep labels inside the body mask (default: on for CT weights, or when trained so).",
        show_default=False,
    ),
) -> None:
    """Segment new scans; predictions keep the scan's grid, qform and sform (open them in 3D Slicer).

    Every input is tried: failures are listed at the end and the exit code is 1 if any failed.
    """
    from voxssl.errors import ConfigError
    from voxssl.eval.predict import PredictionFailed, predict_files

    if interpolation not in ("linear", "nearest"):
        raise ConfigError(f"--interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {device!r}")
    try:
        written = predict_files(
            weights,
            images,
            out,
            device=device,
            interpolation=interpolation,
            progress=not quiet,
            preview=not no_preview,
            body_mask=body_mask,
        )
    except PredictionFailed as failed:
        for path in failed.written:
            typer.echo(str(path))
        raise
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("linear-probe")(linear_probe)
    app.command("fine-tune")(fine_tune)
    app.command("predict")(predict)
