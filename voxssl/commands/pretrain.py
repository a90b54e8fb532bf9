"""``voxssl pretrain RECIPE``: dense self-supervised pretraining of the recipe's backbone."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import OVERRIDES_OPTION, QUIET_OPTION, command, flag, recipe_argument


def pretrain(
    recipe: Path = recipe_argument("`data`, `model` and `pretrain`"),
    overrides: list[str] = OVERRIDES_OPTION,
    resume: bool = flag("--resume", help="Continue from the latest checkpoint of the run folder."),
    quiet: bool = QUIET_OPTION,
) -> None:
    """Pretrain on data.cache_dir (fill it with `voxssl preprocess` first); writes output_dir/name/.

    The run folder receives the resolved recipe, checkpoints/, tensorboard/ and, at the end,
    backbone.safetensors (weights + plan) for linear-probe, fine-tune and predict. Several GPUs:
    torchrun --nproc_per_node N -m voxssl.cli pretrain RECIPE.
    """
    from voxssl.config.recipe import load_recipe, require_section

    resolved = load_recipe(recipe, overrides)
    require_section(resolved, "model", "pretrain")
    require_section(resolved, "pretrain", "pretrain")

    from voxssl.train.loop import pretrain as run_pretrain

    result = run_pretrain(resolved, resume=resume, progress=not quiet)
    if result.backbone_path is not None:
        typer.echo(f"pretrained backbone: {result.backbone_path}")
        typer.echo(f"TensorBoard:         tensorboard --logdir {result.run_dir / 'tensorboard'}")


def register(app: typer.Typer) -> None:
    command(
        app,
        "pretrain",
        pretrain,
        [
            "voxssl pretrain recipes/ct.yaml --set pretrain.steps=1000",
            "voxssl pretrain recipes/ct.yaml --resume",
        ],
    )
