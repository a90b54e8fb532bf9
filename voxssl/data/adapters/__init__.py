"""Dataset adapters: a folder as a data set ships -> a sorted list of :class:`~voxssl.data.case.Case`.

``find_cases(source)`` is the one entry point: it picks the adapter named in the recipe, validates
its ``options`` against the adapter's schema (unknown keys and wrong types are errors naming
``data.sources.N.options.KEY``), finds the cases, keeps the labelled ones if asked, and checks that
case ids are unique. See docs/datasets.md for each layout.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any

from voxssl.config.data import SourceConfig
from voxssl.config.loader import from_dict
from voxssl.data.adapters.base import (
    PARTIAL_LABELS,
    Adapter,
    SourceContext,
    annotated_classes_from_label,
    check_unique_ids,
)
from voxssl.data.case import Case
from voxssl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_MODULES = ("btcv", "amos", "flare", "chaos", "nako", "msd", "nnunet", "folder")

#: adapter name -> Adapter
ADAPTERS: dict[str, Adapter] = {
    name: importlib.import_module(f"voxssl.data.adapters.{name}").ADAPTER for name in _MODULES
}


def find_cases(
    source: SourceConfig, where: str | None = None, recipe_file: str | None = None
) -> list[Case]:
    """The cases of one recipe source, sorted by case id.

    Args:
        source: the ``data.sources[N]`` entry.
        where: its key path for error messages, e.g. ``data.sources.0`` (default: the source name).
        recipe_file: the recipe's file name, prefixed to configuration errors when given.

    Raises:
        ConfigError: unknown adapter, unknown or wrong-typed option, contradicting modality.
        DataError: missing or empty root, unreadable index file, duplicate case ids.
    """
    where = where or f"data source '{source.name}'"
    prefix = f"{recipe_file}: " if recipe_file else ""
    adapter = ADAPTERS.get(source.adapter)
    if adapter is None:
        raise ConfigError(
            f"{prefix}{where}.adapter: unknown adapter {source.adapter!r} (known: {', '.join(ADAPTERS)})"
        )
    options: Any = from_dict(
        adapter.options,
        dict(source.options or {}),
        where=f"{where}.options",
        source=recipe_file or f"adapter {adapter.name}",
    )
    root = Path(source.root).expanduser()
    if not root.is_dir():
        raise DataError(f"{where}.root: folder not found: {root}")
    ctx = SourceContext(root=root, modality=source.modality, where=where)
    cases = adapter.find(ctx, options)
    if not cases:
        raise DataError(
            f"{root}: no {adapter.name} scans found ({adapter.description}); is {where}.root right?"
        )
    if source.labelled_only:
        cases = [case for case in cases if case.has_label]
        if not cases:
            raise DataError(
                f"{root}: no labelled {adapter.name} scans found ({where}.labelled_only is true)"
            )
    cases.sort(key=lambda case: case.case_id)
    check_unique_ids(cases, root)
    logger.info(
        "%s: %d %s cases (%d labelled) in %s",
        where,
        len(cases),
        adapter.name,
        sum(case.has_label for case in cases),
        root,
    )
    return cases


__all__ = ["ADAPTERS", "PARTIAL_LABELS", "Adapter", "annotated_classes_from_label", "find_cases"]
