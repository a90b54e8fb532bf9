"""The on-disk embedding of one scan, written by ``voxssl embed`` and read by explore / one-shot.

One folder per scan::

    <out>/<name>/embedding.npy   float16 (X', Y', Z', D), channels last: row ``(i, j, k)`` is the
                                 D-dim voxel embedding of embedding-grid voxel (i, j, k); open it
                                 with ``np.load(..., mmap_mode="r")`` (no copy in memory)
    <out>/<name>/body.npy        bool (X', Y', Z'): the block holds body voxels (preprocessing's mask)
    <out>/<name>/embedding.json  geometry and provenance (below)

``embedding.json`` holds ``affine`` (embedding voxel -> RAS mm, the world space of the scan's
NIfTI affine), ``stride`` and ``shape``, the preprocessing ``meta`` (crop box, resampling ratio,
orientation, original shape and affine: what :func:`voxssl.data.geometry.to_original_geometry`
needs to map an embedding-grid result back onto the scan's own grid, after upsampling it by
``stride``), and the ``fingerprint`` of what produced it (the source's path, size and
modification time, the weights' sha256, stride, modality, tiling). The folder is written as a
hidden staging folder and renamed when complete, so an interrupted run leaves no partial
embedding (only a ``.tmp-<name>-*`` folder, ignored and safe to delete); a complete folder whose
fingerprint matches is reused instead of being recomputed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxssl.errors import DataError
from voxssl.hub.weights_cache import voxssl_home
from voxssl.utils.triple import int_triple

FORMAT = "voxssl-embedding"
VERSION = 1
EMBEDDING_FILE = "embedding.npy"
BODY_FILE = "body.npy"
META_FILE = "embedding.json"


def embedding_name(image_path: str | os.PathLike) -> str:
    """Folder name for a scan: the file name without ``.nii(.gz)``, or the DICOM folder's name."""
    name = Path(image_path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def source_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """Path, total size and newest modification time of a file or a DICOM folder's files."""
    path = Path(path).resolve()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    stats = [p.stat() for p in files]
    return {
        "path": str(path),
        "files": len(files),
        "bytes": int(sum(s.st_size for s in stats)),
        "mtime_ns": int(max((s.st_mtime_ns for s in stats), default=0)),
    }


@dataclass
class StoredEmbedding:
    """A scan's embedding folder, opened read-only (the array is memory-mapped)."""

    folder: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, folder: str | os.PathLike) -> StoredEmbedding:
        folder = Path(folder)
        meta_path = folder / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{folder}: not an embedding folder (no {META_FILE})") from None
        except ValueError as err:
            raise DataError(f"{meta_path}: not valid JSON ({err})") from None
        if meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: not a voxssl embedding (format {meta.get('format')!r})")
        if int(meta.get("version", 0)) > VERSION:
            raise DataError(
                f"{meta_path}: embedding format {meta['version']} is newer than this voxssl "
                f"reads ({VERSION}); upgrade voxssl"
            )
        stored = cls(folder, meta)
        if tuple(stored.embedding.shape) != (*stored.shape, stored.dim):
            raise DataError(
                f"{folder / EMBEDDING_FILE}: shape {stored.embedding.shape} does not match "
                f"{META_FILE} ({(*stored.shape, stored.dim)})"
            )
        return stored

    @property
    def embedding(self) -> np.ndarray:
        """float16 (X', Y', Z', D), memory-mapped."""
        if not hasattr(self, "_embedding"):
            try:
                self._embedding = np.load(self.folder / EMBEDDING_FILE, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise DataError(f"{self.folder / EMBEDDING_FILE}: unreadable ({err})") from None
        return self._embedding

    @property
    def body(self) -> np.ndarray:
        return np.load(self.folder / BODY_FILE)

    @property
    def shape(self) -> tuple[int, int, int]:
        return int_triple(self.meta["shape"])

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def stride(self) -> int:
        return int(self.meta["stride"])

    @property
    def affine(self) -> np.ndarray:
        """Embedding voxel -> world (RAS mm)."""
        return np.asarray(self.meta["affine"], dtype=np.float64)

    @property
    def preprocess_meta(self) -> dict[str, Any]:
        return self.meta["preprocess_meta"]

    @property
    def source(self) -> str:
        return self.meta["fingerprint"]["source"]["path"]

    def world_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        """Fractional embedding-grid indices (N, 3) of world points (N, 3)."""
        points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        inverse = np.linalg.inv(self.affine)
        return points @ inverse[:3, :3].T + inverse[:3, 3]

    def voxel_to_world(self, voxels: np.ndarray) -> np.ndarray:
        voxels = np.atleast_2d(np.asarray(voxels, dtype=np.float64))
        return voxels @ self.affine[:3, :3].T + self.affine[:3, 3]

    def nearest_voxel(self, point_mm) -> tuple[int, int, int] | None:
        """The embedding voxel whose block contains a world point; None outside the grid."""
        index = np.floor(self.world_to_voxel(point_mm)[0] + 0.5).astype(int)
        if np.any(index < 0) or np.any(index >= np.asarray(self.shape)):
            return None
        return int_triple(index)


def is_complete(folder: Path, fingerprint: dict[str, Any]) -> bool:
    """An embedding folder written from exactly this fingerprint (so it can be reused)."""
    try:
        stored = StoredEmbedding.open(folder)
    except DataError:
        return False
    return stored.meta.get("fingerprint") == fingerprint and (folder / BODY_FILE).is_file()


def default_embeddings_dir(weights_sha256: str) -> Path:
    """Where embeddings made with the weights of this sha256 are kept by default."""
    return voxssl_home() / "embeddings" / weights_sha256[:16]


__all__ = [
    "BODY_FILE",
    "EMBEDDING_FILE",
    "FORMAT",
    "META_FILE",
    "VERSION",
    "StoredEmbedding",
    "default_embeddings_dir",
    "embedding_name",
    "is_complete",
    "source_fingerprint",
]
