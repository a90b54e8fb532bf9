"""The few-shot evaluation protocol (Roy et al., 2020; Ouyang et al., 2020).

* 5-fold cross-validation over the sorted scan ids (contiguous folds).
* The support scan is a scan outside the query fold (and is excluded from training). The published
  codes (SSL-ALPNet ``get_scanids`` + ``SUPP_ID``, kept by DINOv2-ALPNet) take the scan that follows
  the fold in the sorted, circular list of scans (``support_rule: next_scan``); ``index`` takes the
  ``support_index``-th scan outside the fold.
* C chunks. ``chunk_rule: reference`` (the published codes): the support slice of chunk k is element
  ``floor(p_k * n)`` of the n support slices that contain the organ, ``p_k = (2k + 1) / (2C)``; a
  query slice z of the organ range [z_min, z_max] belongs to chunk
  ``floor((z - z_min) / ((z_max - z_min) / C))``, clipped to [0, C - 1]. ``equal``: the middle slice of
  each of C equal parts of the support's range, and C near-equal consecutive parts of the query's.
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


def support_scan(scan_ids: list[str], fold: list[str], index: int = 0, rule: str = "index") -> str:
    """The support scan of ``fold``: ``next_scan`` = the scan after the fold's last one in the
    sorted circular list (outside the fold); ``index`` = the ``index``-th scan outside the fold."""
    ids = sorted(scan_ids)
    members = set(fold)
    if rule == "next_scan":
        last = max(ids.index(s) for s in fold)
        for step in range(1, len(ids) + 1):
            candidate = ids[(last + step) % len(ids)]
            if candidate not in members:
                return candidate
        raise ValueError("every scan is in the query fold: no support scan left")
    if rule != "index":
        raise ValueError(f"unknown support rule {rule!r} (next_scan or index)")
    outside = [s for s in ids if s not in members]
    return outside[index % len(outside)]


def chunk_fractions(chunks: int) -> list[float]:
    """Where the support slice of each chunk sits: (2k + 1) / (2C) (1/6, 1/2, 5/6 for C = 3)."""
    return [(2 * k + 1) / (2 * chunks) for k in range(chunks)]


def support_slices(organ_range: tuple[int, int], chunks: int) -> list[int]:
    """Middle slice of each of ``chunks`` equal parts of [z_min, z_max] (fractions (2k+1)/(2C))."""
    z_min, z_max = organ_range
    length = z_max - z_min + 1
    return [
        min(z_max, z_min + int(np.floor((2 * k + 1) * length / (2 * chunks))))
        for k in range(chunks)
    ]


def support_slices_reference(organ_slices: list[int], chunks: int) -> list[int]:
    """Element ``floor(p_k * n)`` of the sorted slices that contain the organ (the published code)."""
    ordered = sorted(organ_slices)
    if not ordered:
        raise ValueError("the support scan does not contain the organ")
    return [ordered[min(len(ordered) - 1, int(p * len(ordered)))] for p in chunk_fractions(chunks)]


def query_chunks(organ_range: tuple[int, int], chunks: int) -> list[list[int]]:
    """The slices of [z_min, z_max] split into ``chunks`` near-equal consecutive parts."""
    z_min, z_max = organ_range
    return [part.tolist() for part in np.array_split(np.arange(z_min, z_max + 1), chunks)]


def query_chunk_reference(z: int, organ_range: tuple[int, int], chunks: int) -> int:
    """The chunk of query slice ``z``: ``floor((z - z_min) / ((z_max - z_min) / C))`` clipped to
    [0, C - 1]; 0 when the organ spans one slice (the published code)."""
    z_min, z_max = organ_range
    if z_max == z_min:
        return 0
    part = int((z - z_min) // ((z_max - z_min) / chunks))
    return min(max(part, 0), chunks - 1)


def query_parts_reference(
    slices: list[int], organ_range: tuple[int, int], chunks: int
) -> list[list[int]]:
    """``slices`` (the scored query slices) grouped by :func:`query_chunk_reference`."""
    parts: list[list[int]] = [[] for _ in range(chunks)]
    for z in sorted(slices):
        parts[query_chunk_reference(z, organ_range, chunks)].append(int(z))
    return parts


__all__ = [
    "chunk_fractions",
    "cv_folds",
    "query_chunk_reference",
    "query_chunks",
    "query_parts_reference",
    "support_scan",
    "support_slices",
    "support_slices_reference",
]
