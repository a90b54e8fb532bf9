"""Generated CT phantoms written straight into a preprocessed cache: no NIfTI, no resampling.

For tests and benchmarks that need a pretraining or probing cache in seconds. Each phantom keeps
its own grid; its HU values go through a CT window to [0, 1] as CT preprocessing does
(``(x - low) / (high - low)``, clipped; recipes/demo.yaml's window by default), and the body mask
is every voxel above ``body_threshold_hu``. The real path, NIfTI files through
``voxssl preprocess``, is :func:`voxssl.data.phantoms.write_phantom_dataset` plus a recipe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from voxssl.data.cache import case_key, empty_manifest, write_case, write_manifest
from voxssl.data.phantoms.generate import generate_phantom

DEMO_WINDOW_HU = (-1350.0, 1000.0)  # recipes/demo.yaml's preprocess.ct.window_hu
SOURCE = "phantoms"


def write_phantom_cache(
    cache_dir: Path,
    count: int,
    shape: tuple[int, int, int],
    *,
    labelled: bool = False,
    prefix: str = "phantom",
    window_hu: tuple[float, float] = DEMO_WINDOW_HU,
    body_threshold_hu: float = -500.0,
) -> Path:
    """``count`` CT phantoms (seeds 0..count-1) as cases ``<prefix>_NNN`` of source
    ``phantoms`` in ``cache_dir``, with their organ labels when ``labelled``; returns
    ``cache_dir``."""
    cache_dir = Path(cache_dir)
    low, high = window_hu
    manifest = empty_manifest()
    for seed in range(count):
        phantom = generate_phantom(seed, "ct", shape=shape)
        image = np.clip((phantom.image - low) / (high - low), 0, 1).astype(np.float32)
        case_id = f"{prefix}_{seed:03d}"
        meta = {
            "case_id": case_id,
            "source": SOURCE,
            "modality": "ct",
            "spacing": list(phantom.spacing),
            "shape": list(image.shape),
            "num_channels": 1,
            "directory": f"{SOURCE}/{case_id}",
        }
        if labelled:
            meta.update({"annotated": None, "label_classes": np.unique(phantom.label).tolist()})
        manifest["cases"][case_key(SOURCE, case_id)] = write_case(
            cache_dir / SOURCE / case_id,
            image,
            phantom.label if labelled else None,
            phantom.image > body_threshold_hu,
            meta,
        )
    write_manifest(cache_dir, manifest)
    return cache_dir


__all__ = ["DEMO_WINDOW_HU", "write_phantom_cache"]
