"""``voxssl dinov2 pretrain``: continued DINOv2 self-supervised training on 2D medical images."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import (
    OVERRIDES_OPTION,
    QUIET_OPTION,
    Group,
    command,
    flag,
    recipe_argument,
)

dinov2_app = typer.Typer(
    name="dinov2",
    help="Continued DINOv2 self-supervised training of a ViT on slices of the preprocessed cache "
    "and on 2D image folders (MediDino); the result is a few-shot and classification encoder.",
    no_args_is_help=True,
    cls=Group,
)


def pretrain(
    recipe: Path = recipe_argument("a `dinov2`"),
    overrides: list[str] = OVERRIDES_OPTION,
    resume: bool = flag("--resume", help="Continue from the latest checkpoint of the run folder."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Continue DINOv2 training (DINO + iBOT + KoLeo, EMA teacher, multi-crop); writes output_dir/name/.

    The run folder receives the resolved recipe, checkpoints/, tensorboard/ and, at the end,
    encoder.safetensors (the EMA teacher's ViT with its plan): use it as fewshot.encoder.weights,
    with `voxssl classify --weights`, or release it with `voxssl weights export`. Several GPUs:
    torchrun --nproc_per_node N -m voxssl.cli dinov2 pretrain RECIPE.
    """
    from voxssl.config.recipe import load_recipe, require_section

    resolved = load_recipe(recipe, overrides)
    require_section(resolved, "dinov2", "dinov2 pretrain")

    from voxssl.dinov2.loop import TENSORBOARD_DIR, pretrain_dinov2

    result = pretrain_dinov2(resolved, resume=resume, progress=not quiet)
    if result.encoder_path is not None:
        typer.echo(f"encoder:     {result.encoder_path}")
        typer.echo(f"TensorBoard: tensorboard --logdir {result.run_dir / TENSORBOARD_DIR}")


def register(app: typer.Typer) -> None:
    command(
        dinov2_app,
        "pretrain",
        pretrain,
        [
            "voxssl dinov2 pretrain recipes/dinov2_demo.yaml",
            "voxssl dinov2 pretrain recipes/paper/medidino_pretrain.yaml --resume",
        ],
    )
    app.add_typer(dinov2_app, name="dinov2")


__all__ = ["register"]
