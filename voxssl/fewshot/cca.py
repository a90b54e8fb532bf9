"""Connected-component post-processing: keep the most confident foreground component.

Confidence of a component K (seed 000, eq. 8): ``sum_{x in K} p(x) / |K|`` with ``p`` the
foreground probability. ``2d`` keeps one component per slice (8-connectivity, as the published
code); ``3d`` keeps one component of the volume (26-connectivity).
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def component_confidences(
    components: np.ndarray, probability: np.ndarray, count: int
) -> np.ndarray:
    """Mean foreground probability of components 1..count: (count,)."""
    sums = np.bincount(components.ravel(), weights=probability.ravel(), minlength=count + 1)
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    return sums[1:] / np.maximum(sizes[1:], 1)


def keep_most_confident(
    probability: np.ndarray,
    threshold: float = 0.5,
    connectivity: Literal[4, 6, 8, 18, 26] | None = None,
) -> np.ndarray:
    """Binary mask of the most confident component of ``probability > threshold`` (2D or 3D)."""
    import cc3d

    probability = np.asarray(probability, dtype=np.float64)
    foreground = probability > threshold
    connectivity = connectivity or (8 if probability.ndim == 2 else 26)
    components, count = cc3d.connected_components(
        foreground.astype(np.uint8), connectivity=connectivity, return_N=True
    )
    if count == 0:
        return foreground
    best = int(np.argmax(component_confidences(components, probability, count))) + 1
    return components == best


def apply_cca(probability: np.ndarray, mode: str, threshold: float = 0.5) -> np.ndarray:
    """Post-process a (Z, H, W) probability volume; returns the binary (Z, H, W) prediction."""
    if mode == "none":
        return np.asarray(probability) > threshold
    if mode == "2d":
        return (
            np.stack([keep_most_confident(p, threshold) for p in probability])
            if len(probability)
            else np.zeros_like(probability, dtype=bool)
        )
    if mode == "3d":
        return keep_most_confident(probability, threshold)
    raise ValueError(f"unknown CCA mode {mode!r} (none | 2d | 3d)")


__all__ = ["apply_cca", "component_confidences", "keep_most_confident"]
