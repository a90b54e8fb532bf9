"""A repository recipe pointed at folders of scans under a benchmark's work directory.

The benchmarks that pretrain or probe on generated phantoms (phantom_probe, dinov2_classify,
embedding) or on the shared real CT (real_ct_probe) start from a recipe of recipes/ and replace
its data section: folder sources, the cache and the run folder under the work directory. Imported
by those scripts (benchmarks/ is on ``sys.path`` when a script runs, and the tests' loader puts it
there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def folder_source(name: str, root: Path, labels: bool = True) -> dict[str, Any]:
    """A ``folder`` data source of CT scans in ``root/images`` (and labels in ``root/labels``)."""
    options = {"images": "images", "labels": "labels"} if labels else {"images": "images"}
    return {
        "adapter": "folder",
        "name": name,
        "root": str(root),
        "modality": "ct",
        "options": options,
    }


def recipe_over_folders(
    recipe: str, work: Path, sources: list[dict[str, Any]], num_workers: int, **top: Any
) -> dict[str, Any]:
    """The settings of ``recipes/<recipe>`` (its ``base`` merged in) reading ``sources``, with
    the cache in ``work/cache`` and the runs in ``work/runs``; ``top``: other top-level keys
    (``name``, ``seed``) to set."""
    from voxssl.config.recipe import read_recipe_data

    settings = read_recipe_data(REPO / "recipes" / recipe)
    settings.update(
        {
            "data": {
                "cache_dir": str(work / "cache"),
                "num_workers": num_workers,
                "sources": sources,
            },
            "output_dir": str(work / "runs"),
            **top,
        }
    )
    return settings
