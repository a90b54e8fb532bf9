"""The few-shot evaluation protocol (Roy et al., 2020; Ouyang et al., 2020).

* 5-fold cross-validation over the sorted scan ids (contiguous folds).
* The support scan is a scan outside the query fold (and is excluded from training).
* C chunks: the query organ's slice range is split into C equal parts; part k is segmented with the
  support slice at fraction (2k + 1) / (2C) of the support organ's range (1/6, 1/2, 5/6 for C = 3).
"""

from __future__ import annotations

import numpy as np


def cv_folds(scan_ids: list[str], folds: int) -> list[list[str]]:
    ids = sorted(scan_ids)
    if len(ids) < folds + 1:
        raise ValueError(
            f"{folds}-fold cross-validation needs at least {folds + 1} scans, got {len(ids)}"
        )
    return [list(part) for part in np.array_split(np.array(ids, dtype=object), folds)]


def support_scan(scan_ids: list[str], fold: list[str], index: int = 0) -> str:
    """The ``index``-th scan (sorted) outside ``fold``."""
    outside = [s for s in sorted(scan_ids) if s not in set(fold)]
    return outside[index % len(outside)]


def support_slices(organ_range: tuple[int, int], chunks: int) -> list[int]:
    """Middle slice of each of ``chunks`` equal parts of [z_min, z_max] (fractions (2k+1)/(2C))."""
    z_min, z_max = organ_range
    length = z_max - z_min + 1
    return [
        min(z_max, z_min + int(np.floor((2 * k + 1) * length / (2 * chunks))))
        for k in range(chunks)
    ]


def query_chunks(organ_range: tuple[int, int], chunks: int) -> list[list[int]]:
    """The slices of [z_min, z_max] split into ``chunks`` near-equal consecutive parts."""
    z_min, z_max = organ_range
    return [part.tolist() for part in np.array_split(np.arange(z_min, z_max + 1), chunks)]


__all__ = ["cv_folds", "query_chunks", "support_scan", "support_slices"]
