"""Shared body of the ``preprocessing/<dataset>.py`` scripts: arguments -> recipe -> preprocess.

Each script is ``python preprocessing/<dataset>.py ROOT --cache DIR [--workers N] [--set k=v]``.
It builds the same recipe a user would write (one ``data.sources`` entry for the data set, default
``preprocess`` parameters), applies ``--set`` overrides (e.g. ``--set preprocess.ct.spacing=[1.5,1.5,2]``
or ``--set data.sources.0.options.splits=[train]``), runs :func:`voxssl.data.pipeline.run_preprocess`
and saves the resolved recipe beside the cache, exactly like ``voxssl preprocess RECIPE``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def parser(adapter: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"preprocessing/{adapter}.py", description=description)
    p.add_argument("root", type=Path, help="the data set's folder, as downloaded and unpacked")
    p.add_argument("--cache", type=Path, required=True, help="cache folder (data.cache_dir)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (data.num_workers)")
    p.add_argument(
        "--name", default=adapter, help="cache sub-folder of this source (data.sources.0.name)"
    )
    p.add_argument("--labelled-only", action="store_true", help="skip scans without a label")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override, repeatable (values are YAML)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(
    adapter: str,
    description: str,
    source_fields: Callable[[argparse.Namespace], dict[str, Any]] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: list[str] | None = None,
) -> int:
    """Parse ``argv``, preprocess, return the exit code (0 ok, 1 user error or failed cases)."""
    p = parser(adapter, description)
    if add_arguments is not None:
        add_arguments(p)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from voxssl.config.loader import apply_overrides
    from voxssl.config.recipe import recipe_from_dict, save_resolved
    from voxssl.data.pipeline import run_preprocess
    from voxssl.errors import VoxsslError

    source = {
        "adapter": adapter,
        "root": str(args.root),
        "name": args.name,
        "labelled_only": args.labelled_only,
    }
    source.update(source_fields(args) if source_fields else {})
    data = {
        "name": f"preprocess_{args.name}",
        "data": {"sources": [source], "cache_dir": str(args.cache), "num_workers": args.workers},
    }
    try:
        recipe = recipe_from_dict(
            apply_overrides(data, args.overrides), source=f"preprocessing/{adapter}.py"
        )
        summary = run_preprocess(recipe, progress=not args.quiet)
        save_resolved(recipe, summary.cache_dir)
    except VoxsslError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary.describe(), file=sys.stdout if summary.ok else sys.stderr)
    return 0 if summary.ok else 1
