"""Axial slices of a preprocessed volume for 2D few-shot segmentation.

A volume is (X, Y, Z) (RAS, slice axis last). A slice is returned as a (3, S, S) tensor holding
slices z-1, z, z+1 (clamped at the ends; a wider slab for the 3D encoder) resized in-plane to S x S; labels and masks use
nearest-neighbour resizing. :func:`resize_back` maps (Z, S, S) predictions to the (X, Y, Z) grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _as_3d(image: np.ndarray) -> np.ndarray:
    """Multi-channel (C, X, Y, Z) images use their first channel."""
    return image[0] if image.ndim == 4 else image


def resize_slices(
    slices: np.ndarray | torch.Tensor, size: int, nearest: bool = False
) -> torch.Tensor:
    """(N, X, Y) -> (N, size, size)."""
    tensor = torch.as_tensor(
        np.asarray(slices, dtype=np.float32) if isinstance(slices, np.ndarray) else slices
    )
    tensor = tensor.float()[:, None]
    if nearest:
        out = F.interpolate(tensor, size=(size, size), mode="nearest")
    else:
        out = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)
    return out[:, 0]


def resize_back(
    prediction: torch.Tensor, shape_xy: tuple[int, int], nearest: bool = False
) -> torch.Tensor:
    """(N, S, S) -> (N, X, Y)."""
    x = prediction.float()[:, None]
    if nearest:
        return F.interpolate(x, size=tuple(shape_xy), mode="nearest")[:, 0]
    return F.interpolate(x, size=tuple(shape_xy), mode="bilinear", align_corners=False)[:, 0]


@dataclass
class SliceVolume:
    """A read-only slice view of one volume (and optional label) at in-plane size ``size``."""

    image: np.ndarray  # (X, Y, Z) or (C, X, Y, Z), values in [0, 1]
    size: int
    label: np.ndarray | None = None  # (X, Y, Z) uint8
    context: int = 1  # neighbours on each side: 1 gives slices z-1, z, z+1

    def __post_init__(self) -> None:
        self.image = _as_3d(self.image)
        if self.label is not None and self.label.shape != self.image.shape:
            raise ValueError(f"label shape {self.label.shape} != image shape {self.image.shape}")

    @property
    def depth(self) -> int:
        return int(self.image.shape[-1])

    @property
    def shape_xy(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])

    def context_indices(self, z: int) -> list[int]:
        return [
            min(max(k, 0), self.depth - 1) for k in range(z - self.context, z + self.context + 1)
        ]

    def slice(self, z: int) -> torch.Tensor:
        """(2 context + 1, S, S) float32: slices z-1, z, z+1 for the default context."""
        stack = np.stack(
            [np.asarray(self.image[:, :, k], dtype=np.float32) for k in self.context_indices(z)]
        )
        return resize_slices(stack, self.size)

    def slices(self, zs: list[int]) -> torch.Tensor:
        channels = 2 * self.context + 1
        return (
            torch.stack([self.slice(z) for z in zs])
            if zs
            else torch.zeros(0, channels, self.size, self.size)
        )

    def label_slice(self, z: int) -> torch.Tensor:
        """(S, S) label (canonical ids), nearest-neighbour resized."""
        if self.label is None:
            raise ValueError("this volume has no label")
        return resize_slices(np.asarray(self.label[:, :, z])[None], self.size, nearest=True)[0].to(
            torch.uint8
        )


def organ_slice_range(label: np.ndarray, organ: int) -> tuple[int, int] | None:
    """First and last slice (inclusive) that contain ``organ``; None when absent."""
    present = np.flatnonzero((np.asarray(label) == organ).any(axis=(0, 1)))
    if present.size == 0:
        return None
    return int(present[0]), int(present[-1])


__all__ = ["SliceVolume", "organ_slice_range", "resize_back", "resize_slices"]
