"""``voxssl pretrain RECIPE``: dense self-supervised pretraining of the recipe's backbone."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import OVERRIDES_OPTION


def pretrain(
    recipe: Path = typer.Argument(
        ..., help="Recipe YAML with `data`, `model` and `pretrain` sections."
    ),
    overrides: list[str] = OVERRIDES_OPTION,
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the latest checkpoint of the run folder."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Pretrain on data.cache_dir (fill it with `voxssl preprocess` first); writes output_dir/name/.

    The run folder receives the resolved recipe, checkpoints/, tensorboard/ and, at the end,
    backbone.safetensors (weights + plan) for linear-probe, fine-tune and predict. Several GPUs:
    torchrun --nproc_per_node N -m voxssl.cli pretrain RECIPE.
    """
    from voxssl.config.recipe import load_recipe, require_section
    from voxssl.train.loop import pretrain as run_pretrain

    resolved = load_recipe(recipe, overrides)
    require_section(resolved, "model", "pretrain")
    require_section(resolved, "pretrain", "pretrain")
    result = run_pretrain(resolved, resume=resume, progress=not quiet)
    if result.backbone_path is not None:
        typer.echo(f"pretrained backbone: {result.backbone_path}")
        typer.echo(f"TensorBoard:         tensorboard --logdir {result.run_dir / 'tensorboard'}")


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
