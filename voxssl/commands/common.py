"""Options shared by the verbs."""

from __future__ import annotations

import typer

#: ``--set key.path=value`` overrides, repeatable; the value is read as YAML.
OVERRIDES_OPTION = typer.Option(
    None,
    "--set",
    "-s",
    help="Override a recipe value, e.g. --set data.cache_dir=/scratch/cache (repeatable; values are YAML).",
)
