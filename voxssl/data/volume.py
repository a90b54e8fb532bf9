"""A scan in memory: voxels in RAS order plus the geometry of the file it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voxssl.utils.triple import float_triple, int_triple


@dataclass
class Volume:
    """Voxels reoriented to RAS, with everything needed to go back to the file's grid.

    Attributes:
        data: float32 (or the file's int8/int16/uint8/uint16 type, to save memory), (X, Y, Z) or (C, X, Y, Z) for multi-channel scans, in RAS voxel order:
            array axis i runs (closest to) along world axis i of RAS+ (x towards the patient's
            Right, y Anterior, z Superior), so the slice axis is the last one.
        affine: 4x4 voxel -> world (RAS mm) of ``data``.
        original_affine: 4x4 voxel -> world (RAS mm) of the array as stored in the file.
        original_shape: spatial shape of the array as stored in the file.
        orientation: nibabel orientation ``ornt`` (3x2) that took the stored array to RAS.
        path: the file or DICOM folder it was read from (first channel for multi-channel scans).
    """

    data: np.ndarray
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, int, int]
    orientation: np.ndarray
    path: Path

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        return int_triple(self.data.shape[-3:])

    @property
    def num_channels(self) -> int:
        return 1 if self.data.ndim == 3 else int(self.data.shape[0])

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the array axes (norms of the affine's columns)."""
        return float_triple(np.linalg.norm(self.affine[:3, :3], axis=0))
