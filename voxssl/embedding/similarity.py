"""Cosine similarity of one voxel's embedding to every voxel of one or more scans, fast.

What makes a click cheap, whatever the scan's size:

* the embedding grid is already small (``voxssl embed --stride``; explore's ``auto`` keeps it at
  or below 1 M voxels: a 512x512x150 CT at 1x1x2 mm and stride 4 is about 0.3 M);
* the vectors are optionally reduced once to ``components`` dimensions by an uncentred PCA (the
  rank-k subspace that best preserves dot products, fitted on a subsample of all scans' voxels,
  one shared basis so that scans stay comparable), then L2-normalised once and kept as one
  contiguous float32 matrix per scan;
* a click is then one matrix-vector product per scan (``N x k`` multiply-adds) and an argmax.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxssl.embedding.store import StoredEmbedding
from voxssl.errors import DataError

log = logging.getLogger(__name__)

#: Voxels per chunk when converting a memory-mapped float16 embedding (bounds the temporaries).
CHUNK = 1 << 16
#: Voxels sampled (over all scans) to fit the PCA basis.
PCA_SAMPLES = 200_000


def fit_basis(
    scans: Sequence[StoredEmbedding], components: int, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Top ``components`` right singular vectors (D, k) of a voxel subsample of all scans
    (uncentred), and the fraction of the squared norm they keep on that sample."""
    rng = np.random.default_rng(seed)
    per_scan = max(1, PCA_SAMPLES // len(scans))
    samples = []
    for scan in scans:
        flat = scan.embedding.reshape(-1, scan.dim)
        count = min(per_scan, flat.shape[0])
        index = np.sort(rng.choice(flat.shape[0], size=count, replace=False))
        samples.append(np.asarray(flat[index], dtype=np.float32))
    sample = np.concatenate(samples)
    sample /= np.maximum(np.linalg.norm(sample, axis=1, keepdims=True), 1e-12)
    _, singular, vt = np.linalg.svd(sample, full_matrices=False)
    energy = float((singular[:components] ** 2).sum() / max((singular**2).sum(), 1e-12))
    return np.ascontiguousarray(vt[:components].T), energy


def normalised_matrix(scan: StoredEmbedding, basis: np.ndarray | None = None) -> np.ndarray:
    """(N, k) float32: every voxel's embedding (projected on ``basis``), L2-normalised."""
    flat = scan.embedding.reshape(-1, scan.dim)
    width = scan.dim if basis is None else basis.shape[1]
    out = np.empty((flat.shape[0], width), dtype=np.float32)
    for start in range(0, flat.shape[0], CHUNK):
        chunk = np.asarray(flat[start : start + CHUNK], dtype=np.float32)
        if basis is not None:
            chunk = chunk @ basis
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        np.divide(chunk, np.maximum(norms, 1e-12), out=out[start : start + CHUNK])
    return out


@dataclass
class Match:
    """The best-matching voxel of a scan: embedding-grid index, world point (RAS mm), cosine."""

    voxel: tuple[int, int, int]
    world: tuple[float, float, float]
    score: float


class SimilarityIndex:
    """Normalised (optionally PCA-reduced) embeddings of one or more scans, ready for queries.

    Args:
        scans: stored embeddings (same weights, hence the same dimension).
        components: reduce to this many dimensions first (``None`` or >= D: no reduction).
        restrict_to_body: best matches only among body voxels (air matches air everywhere).
    """

    def __init__(
        self,
        scans: Sequence[StoredEmbedding],
        components: int | None = None,
        restrict_to_body: bool = True,
    ) -> None:

        if not scans:
            raise ValueError("no scans")
        dims = {scan.dim for scan in scans}
        if len(dims) != 1:
            raise DataError(
                "the embeddings have different dimensions "
                f"({', '.join(f'{s.folder}: {s.dim}' for s in scans)}); embed them with the same weights"
            )
        self.scans = list(scans)
        dim = dims.pop()
        self.basis, self.energy = None, 1.0
        if components is not None and 0 < components < dim:
            self.basis, self.energy = fit_basis(self.scans, components)
            log.info(
                "PCA %d -> %d dimensions keeps %.1f%% of the energy",
                dim,
                components,
                100 * self.energy,
            )
        self.matrices = [normalised_matrix(scan, self.basis) for scan in self.scans]
        self.masks = [scan.body.reshape(-1) if restrict_to_body else None for scan in self.scans]

    @property
    def width(self) -> int:
        return int(self.matrices[0].shape[1])

    def vector_at(self, scan_index: int, voxel: Sequence[int]) -> np.ndarray:
        shape = self.scans[scan_index].shape
        flat = np.ravel_multi_index(tuple(int(v) for v in voxel), shape)
        return self.matrices[scan_index][flat]

    def similarity(self, scan_index: int, query: np.ndarray) -> np.ndarray:
        """Cosine similarity of ``query`` (a row of :meth:`vector_at`) to every voxel: (X', Y', Z')."""
        return (self.matrices[scan_index] @ query).reshape(self.scans[scan_index].shape)

    def best_match(self, scan_index: int, similarity: np.ndarray) -> Match:
        flat = similarity.reshape(-1)
        mask = self.masks[scan_index]
        if mask is not None and mask.any():
            best = int(np.argmax(np.where(mask, flat, -np.inf)))
        else:
            best = int(np.argmax(flat))
        scan = self.scans[scan_index]
        voxel = np.unravel_index(best, scan.shape)
        world = scan.voxel_to_world(np.array(voxel))[0]
        return Match(
            voxel=tuple(int(v) for v in voxel),  # type: ignore[arg-type]
            world=tuple(float(w) for w in world),  # type: ignore[arg-type]
            score=float(flat[best]),
        )


__all__ = ["Match", "SimilarityIndex", "fit_basis", "normalised_matrix"]
