"""Cosine similarity of one voxel's embedding to every voxel of one or more scans, fast.

What is compared: the embeddings *standardised* per channel (minus the mean, divided by the
standard deviation, both over the body voxels of all the scans compared), optionally projected on
their first principal components, then L2-normalised. Without the centring, the cosine of raw
FPN embeddings is dominated by their common direction (on a CT phantom it carries 47 % of the
squared norm of the body voxels with the pretrained demo model, 99 % at random init, where every
voxel looks alike: cosine ~0.997); the scaling
keeps wide channels from drowning the others (the same reason the linear probe standardises
its features).

What makes a click cheap, whatever the scan's size:

* the embedding grid is already small (``voxssl embed --stride``; explore's ``auto`` keeps it at
  or below 2^20 voxels: a 512x512x150 CT of 0.8x0.8x2.5 mm with a 1x1x2 mm model is at most
  103x103x47 = 0.5 M at stride 4);
* the vectors are transformed once (standardised, reduced to ``components`` dimensions by PCA
  fitted on a sample of all scans' body voxels, one shared basis so that scans stay comparable)
  and L2-normalised once, kept as one contiguous float32 matrix per scan;
* a click is then one matrix-vector product per scan (``N x k`` multiply-adds) and an argmax.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from voxssl.embedding.store import StoredEmbedding
from voxssl.errors import DataError
from voxssl.utils.triple import float_triple, int_triple

log = logging.getLogger(__name__)

#: Voxels per chunk when converting a memory-mapped float16 embedding (bounds the temporaries).
CHUNK = 1 << 16
#: Voxels sampled (over all scans) to fit the standardisation and the PCA basis.
SAMPLES = 200_000


def sample_vectors(
    scans: Sequence[StoredEmbedding], count: int = SAMPLES, seed: int = 0
) -> np.ndarray:
    """float32 (n, D): up to ``count`` body voxels' embeddings, shared equally by the scans."""
    rng = np.random.default_rng(seed)
    per_scan = max(1, count // len(scans))
    samples = []
    for scan in scans:
        flat = scan.embedding.reshape(-1, scan.dim)
        body = np.flatnonzero(scan.body.reshape(-1))
        pool = body if len(body) else np.arange(flat.shape[0])
        index = np.sort(rng.choice(pool, size=min(per_scan, len(pool)), replace=False))
        samples.append(np.asarray(flat[index], dtype=np.float32))
    return np.concatenate(samples)


@dataclass
class FeatureTransform:
    """``unit((x - mean) * scale @ basis)``: what the cosine similarity is computed on."""

    mean: np.ndarray  # (D,) float64
    scale: np.ndarray  # (D,) float64, 1 / standard deviation (0 for constant channels)
    basis: np.ndarray | None  # (D, k) principal directions, or None
    explained: float  # fraction of the standardised variance the basis keeps (1.0 without)

    @classmethod
    def fit(
        cls, scans: Sequence[StoredEmbedding], components: int | None = None, seed: int = 0
    ) -> FeatureTransform:
        sample = sample_vectors(scans, seed=seed).astype(np.float64)
        mean = sample.mean(axis=0)
        std = sample.std(axis=0)
        usable = std > 1e-6 * max(float(std.max()), 1e-12)
        scale = np.where(usable, 1.0 / np.maximum(std, 1e-12), 0.0)
        basis, explained = None, 1.0
        if components is not None and 0 < components < sample.shape[1]:
            _, singular, vt = np.linalg.svd((sample - mean) * scale, full_matrices=False)
            basis = np.ascontiguousarray(vt[:components].T.astype(np.float32))
            explained = float((singular[:components] ** 2).sum() / max((singular**2).sum(), 1e-12))
        return cls(mean, scale, basis, explained)

    @property
    def width(self) -> int:
        return len(self.mean) if self.basis is None else int(self.basis.shape[1])

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """float32 (N, width) unit vectors from raw embeddings (N, D)."""
        # centre in float64: a channel's offset is up to ~20x its spread (demo model), and float32
        # rounding of the difference shows in the 4th decimal of the cosine
        x = ((np.asarray(vectors, dtype=np.float64) - self.mean) * self.scale).astype(np.float32)
        if self.basis is not None:
            x = x @ self.basis
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def transformed_matrix(scan: StoredEmbedding, transform: FeatureTransform) -> np.ndarray:
    """(N, width) float32: every voxel's transformed, L2-normalised embedding."""
    flat = scan.embedding.reshape(-1, scan.dim)
    out = np.empty((flat.shape[0], transform.width), dtype=np.float32)
    for start in range(0, flat.shape[0], CHUNK):
        out[start : start + CHUNK] = transform.apply(flat[start : start + CHUNK])
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
        components: PCA to this many dimensions after standardising (``None`` or >= D: none).
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
        dims.pop()
        self.transform = FeatureTransform.fit(self.scans, components)
        self.energy = self.transform.explained
        if self.transform.basis is not None:
            log.info(
                "PCA to %d dimensions keeps %.1f%% of the standardised variance",
                self.transform.width,
                100 * self.energy,
            )
        self.matrices = [transformed_matrix(scan, self.transform) for scan in self.scans]
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
            voxel=int_triple(voxel),
            world=float_triple(world),
            score=float(flat[best]),
        )


__all__ = ["FeatureTransform", "Match", "SimilarityIndex", "sample_vectors", "transformed_matrix"]
