"""``voxssl linear-probe``, ``voxssl fine-tune`` and ``voxssl predict``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer

from voxssl.commands.common import (
    OVERRIDES_OPTION,
    QUIET_OPTION,
    command,
    flag,
    recipe_argument,
)

if TYPE_CHECKING:
    from voxssl.eval.protocol import Protocol
    from voxssl.eval.run_results import RunMode

OVERWRITE_OPTION = flag(
    "--overwrite", help="Replace the results of an earlier run in the run folder (output_dir/name)."
)
RESUME_OPTION = flag(
    "--resume",
    help="Continue an interrupted run: keep the folds that finished, redo the others (same recipe).",
)

WEIGHTS_HELP = (
    "Backbone weights: a voxssl .safetensors file, a run folder, a released model name (see "
    "`voxssl weights list`), or 'random' for the recipe's architecture randomly initialised (the "
    "baseline)."
)


def linear_probe(
    recipe: Path = recipe_argument("`data`, `preprocess` and `probe`"),
    weights: str = typer.Option(..., "--weights", "-w", metavar="WEIGHTS", help=WEIGHTS_HELP),
    overrides: list[str] = OVERRIDES_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    resume: bool = RESUME_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Train a head on the frozen backbone over the recipe's folds; write Dice per organ and case.

    Results go to output_dir/name/: results.md (the Dice table), results.json/.csv, splits.json
    and one folder per fold with the trained model (for `voxssl predict`), predictions and
    overlays.
    """
    _run(recipe, weights, overrides, "probe", "linear-probe", _mode(overwrite, resume), quiet)


def fine_tune(
    recipe: Path = recipe_argument("`data`, `preprocess` and `finetune`"),
    weights: str | None = typer.Option(
        None,
        "--weights",
        "-w",
        metavar="WEIGHTS",
        help=WEIGHTS_HELP + " Not needed with --from-scratch.",
    ),
    from_scratch: bool = flag(
        "--from-scratch",
        help="Random initialisation, same budget (sets finetune.from_scratch=true): the baseline. "
        "With --weights and no `model` section in the recipe, the random backbone has the "
        "architecture of those weights.",
    ),
    overrides: list[str] = OVERRIDES_OPTION,
    overwrite: bool = OVERWRITE_OPTION,
    resume: bool = RESUME_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Fine-tune backbone + head (backbone frozen first, then its lr ramps up) over the recipe's folds."""
    if weights is None and not from_scratch:
        raise typer.BadParameter(
            "give --weights, or --from-scratch for the baseline", param_hint="--weights"
        )
    mode = _mode(overwrite, resume)
    extra = ["finetune.from_scratch=true"] if from_scratch else []
    _run(
        recipe,
        weights or "random",
        list(overrides or []) + extra,
        "finetune",
        "fine-tune",
        mode,
        quiet,
    )


def _mode(overwrite: bool, resume: bool) -> RunMode:
    if overwrite and resume:
        raise typer.BadParameter("give --overwrite or --resume, not both", param_hint="--overwrite")
    return "overwrite" if overwrite else "resume" if resume else "new"


def _run(
    recipe_path: Path,
    weights: str,
    overrides: list[str] | None,
    section: str,
    protocol: Protocol,
    mode: RunMode,
    quiet: bool,
) -> None:
    from voxssl.config.recipe import load_recipe, require_section

    recipe = load_recipe(recipe_path, overrides)
    cfg = require_section(recipe, section, protocol)

    from voxssl.eval.protocol import run_downstream

    summary = run_downstream(recipe, cfg, weights, protocol, progress=not quiet, mode=mode)
    for label, subset in summary["subsets"].items():  # low-data subsets: each on its own
        mean = subset["mean_dice"]
        training = "" if len(summary["subsets"]) == 1 else f" ({label} training cases per fold)"
        typer.echo(
            f"{protocol}{training}: mean Dice {100 * mean['over_cases']['mean']:.1f} ± "
            f"{100 * mean['over_cases']['std']:.1f} % over {mean['over_cases']['n']} test case(s)"
        )
    typer.echo(f"results in {recipe.run_dir}/results.md")
    if cfg.tensorboard:
        typer.echo(f"TensorBoard: tensorboard --logdir {recipe.run_dir}")


def predict(
    images: list[Path] = typer.Argument(
        ...,
        metavar="IMAGE",
        help="NIfTI files or DICOM series folders.",
        show_default=False,
    ),
    weights: str = typer.Option(
        ...,
        "--weights",
        "-w",
        metavar="WEIGHTS",
        help="A model.safetensors written by linear-probe / fine-tune.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", metavar="DIR", help="Output folder for <name>_seg.nii.gz label maps."
    ),
    device: Literal["auto", "cpu", "cuda"] = typer.Option("auto", "--device", help="Where to run."),
    interpolation: Literal["linear", "nearest"] = typer.Option(
        "linear",
        "--interpolation",
        help="Back to the scan's grid: 'linear' (probabilities, then decide) or 'nearest' (label).",
    ),
    quiet: bool = QUIET_OPTION,
    no_preview: bool = flag(
        "--no-preview", help="Do not write the <name>_seg.png preview beside each label map."
    ),
    body_mask: bool | None = typer.Option(
        None,
        "--body-mask/--no-body-mask",
        metavar="",
        help="Keep labels inside the body mask (default: on for CT weights, or when trained so).",
        show_default=False,
    ),
    sw_batch_size: int = typer.Option(2, "--sw-batch-size", help="Windows per forward pass."),
    overlap: float | None = typer.Option(
        None, "--overlap", help="Sliding-window overlap in [0, 1) (default: the weights' own)."
    ),
    amp: Literal["auto", "bf16", "fp32"] = typer.Option(
        "auto", "--amp", help="bf16 autocast on a GPU (auto, bf16) or fp32; the CPU runs fp32."
    ),
) -> None:
    """Segment new scans; predictions keep the scan's grid, qform and sform (open them in 3D Slicer).

    Every input is tried: failures are listed at the end and the exit code is 1 if any failed.
    """
    from voxssl.eval.predict import PredictionFailed, predict_files

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
            sw_batch_size=sw_batch_size,
            sw_overlap=overlap,
            amp=amp,
        )
    except PredictionFailed as failed:
        for path in failed.written:
            typer.echo(str(path))
        raise
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    command(
        app,
        "linear-probe",
        linear_probe,
        [
            "voxssl linear-probe recipes/probe_btcv.yaml --weights runs/ct/backbone.safetensors",
            "voxssl linear-probe recipes/probe_btcv.yaml --weights random --set name=probe-random",
        ],
    )
    command(
        app,
        "fine-tune",
        fine_tune,
        [
            "voxssl fine-tune recipes/finetune_btcv.yaml --weights hierarchical-ct",
            "voxssl fine-tune recipes/finetune_btcv.yaml --from-scratch --set name=scratch",
        ],
    )
    command(
        app,
        "predict",
        predict,
        [
            "voxssl predict --weights runs/probe/fold0/model.safetensors scan.nii.gz --out preds/",
            "voxssl predict -w runs/probe/fold1/model.safetensors dicom/series1/ dicom/series2/ -o preds/ --device cpu",
        ],
    )
