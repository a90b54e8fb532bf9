"""``voxssl preprocess RECIPE``: read, reorient, resample, crop and normalise every scan into the cache."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import OVERRIDES_OPTION, QUIET_OPTION, command, recipe_argument


def preprocess(
    recipe: Path = recipe_argument("`data` (sources, cache_dir) and `preprocess`"),
    overrides: list[str] = OVERRIDES_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Preprocess every scan of the recipe's sources into data.cache_dir (skips cases already done)."""
    from voxssl.config.recipe import load_recipe, save_resolved

    resolved = load_recipe(recipe, overrides)

    from voxssl.data.pipeline import run_preprocess
    from voxssl.errors import DataError

    summary = run_preprocess(resolved, progress=not quiet)
    save_resolved(resolved, summary.cache_dir)
    typer.echo(summary.describe(), err=not summary.ok)
    if not summary.ok:
        raise DataError(
            f"{len(summary.failed)} case(s) failed (listed above); the other cases are cached in {summary.cache_dir}"
        )


def register(app: typer.Typer) -> None:
    command(
        app,
        "preprocess",
        preprocess,
        [
            "voxssl preprocess recipes/ct.yaml --set data.sources.0.root=/data/amos22",
            "voxssl preprocess recipes/demo.yaml --set data.cache_dir=/scratch/cache -q",
        ],
    )
