"""``voxssl preprocess RECIPE``: read, reorient, resample, crop and normalise every scan into the cache."""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import OVERRIDES_OPTION


def preprocess(
    recipe: Path = typer.Argument(
        ..., help="Recipe YAML with `data` (sources, cache_dir) and `preprocess` sections."
    ),
    overrides: list[str] = OVERRIDES_OPTION,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Preprocess every scan of the recipe's sources into data.cache_dir (skips cases already done)."""
    from voxssl.config.recipe import load_recipe, save_resolved
    from voxssl.data.pipeline import run_preprocess
    from voxssl.errors import DataError

    resolved = load_recipe(recipe, overrides)
    summary = run_preprocess(resolved, progress=not quiet)
    save_resolved(resolved, summary.cache_dir)
    typer.echo(summary.describe(), err=not summary.ok)
    if not summary.ok:
        # a VoxsslError: the CLI prints it and exits 1 (typer.Exit codes are lost in non-standalone mode)
        raise DataError(
            f"{len(summary.failed)} case(s) failed (listed above); the other cases are cached in {summary.cache_dir}"
        )


def register(app: typer.Typer) -> None:
    app.command("preprocess")(preprocess)
