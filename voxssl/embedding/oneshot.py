"""``voxssl one-shot``: segment scans from ONE labelled scan by matching voxel embeddings.

No training. The support scan and every query are embedded (:mod:`voxssl.embedding.embed`, reused
when up to date); for each query, the embeddings are standardised per channel over the body voxels
of the support and that query, and L2-normalised (:class:`~voxssl.embedding.similarity.
FeatureTransform`, as in ``voxssl explore``). Two ways to turn the support's labels
into class probabilities at every query voxel, on the embedding grid:

* ``prototype``: one prototype per organ (the normalised mean of its voxels' embeddings) and
  ``background_prototypes`` for the background (spherical k-means of the support's background
  voxels: the background is many tissues, one mean would describe none of them). A voxel's class
  score is its cosine to the class' prototype (the best one for the background); probabilities
  are ``softmax(score / temperature)`` (temperature 0.05: ALPNet's scale factor of 20);
* ``neighbours``: label transfer through correspondences, as a click does in ``voxssl explore``:
  the ``k`` most similar support voxels of each query voxel (among a class-stratified bank of at
  most ``bank_size`` (20 000) support voxels) vote with weights ``softmax(cosine / temperature)``;
* ``both`` (the default): the mean of the two.

Then, as ``voxssl predict``: the probabilities are upsampled to the preprocessed grid, each
organ's connected components are cleaned up as in the few-shot recipe (keep the component with
the highest mean probability, :mod:`voxssl.fewshot.cca`), and the label is decided on the scan's
own grid after trilinear resampling of the probabilities (:func:`voxssl.eval.inference.
label_in_original_geometry`), written with the scan's affine as ``<name>_seg.nii.gz``. Label ids
are the support label's own (any ids 1..255), not remapped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from voxssl.data import geometry
from voxssl.data.geometry import resample_linear
from voxssl.data.readers import read_volume
from voxssl.embedding.compute import embedding_shape
from voxssl.embedding.embed import ensure_embeddings, load_embedder
from voxssl.embedding.similarity import FeatureTransform
from voxssl.embedding.store import StoredEmbedding, default_embeddings_dir, embedding_name
from voxssl.errors import ConfigError, DataError
from voxssl.eval.inference import Interpolation, label_in_original_geometry, write_label_nifti
from voxssl.eval.predict import output_name
from voxssl.fewshot.cca import component_confidences

log = logging.getLogger(__name__)

METHODS = ("prototype", "neighbours", "both")
CCA_MODES = ("3d", "none")
CHUNK = 8192


@dataclass
class OneShotConfig:
    method: str = "both"
    temperature: float = 0.05
    background_prototypes: int = 16
    neighbours: int = 10
    bank_size: int = 20_000
    neighbour_step: int = 2  # neighbours on every 2nd voxel per axis, interpolated in between
    cca: str = "3d"
    seed: int = 0

    def check(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.cca not in CCA_MODES:
            raise ConfigError(f"--cca must be one of {', '.join(CCA_MODES)}, got {self.cca!r}")
        if not self.temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {self.temperature}")
        if (
            min(self.neighbours, self.background_prototypes, self.bank_size, self.neighbour_step)
            < 1
        ):
            raise ConfigError("--neighbours, background prototypes and the bank size must be >= 1")


def normalised(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def support_label_on_grid(stored: StoredEmbedding, label_path: str | os.PathLike) -> np.ndarray:
    """The support label (ids as stored) on the embedding grid: the majority id of each block."""

    meta = stored.preprocess_meta
    volume = read_volume(label_path)
    if tuple(volume.original_shape) != tuple(meta["original_shape"]) or not np.allclose(
        volume.original_affine, meta["original_affine"], atol=1e-3
    ):
        raise DataError(
            f"{label_path}: the label's grid ({'x'.join(map(str, volume.original_shape))}) or affine "
            f"differs from its image's ({'x'.join(map(str, meta['original_shape']))})"
        )
    values = np.asarray(volume.data)
    if values.size and (
        values.min() < 0 or values.max() > 255 or not np.all(values == np.rint(values))
    ):
        raise DataError(f"{label_path}: label ids must be integers 0..255")
    label = values.astype(np.uint8)
    box = np.asarray(meta["crop_box"], dtype=np.int64)
    positions = geometry.source_positions(box, np.asarray(meta["ratio"], dtype=np.float64))
    cached = geometry.resample_nearest(label, positions)
    return block_majority(cached, stored.stride)


def block_majority(label: np.ndarray, stride: int) -> np.ndarray:
    """Most frequent id of every ``stride``-block (ties: the smaller id)."""
    if stride == 1:
        return label

    shape = embedding_shape(label.shape, stride)
    padded = np.zeros([n * stride for n in shape], dtype=label.dtype)
    padded[: label.shape[0], : label.shape[1], : label.shape[2]] = label
    blocks = padded.reshape(shape[0], stride, shape[1], stride, shape[2], stride)
    blocks = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(*shape, -1)
    ids = np.unique(label)
    counts = np.stack([(blocks == i).sum(axis=-1) for i in ids])
    return ids[np.argmax(counts, axis=0)].astype(label.dtype)


def spherical_kmeans(
    vectors: np.ndarray, k: int, seed: int = 0, iterations: int = 15
) -> np.ndarray:
    """``k`` unit centroids of unit ``vectors`` (N, D) maximising the summed cosine."""
    rng = np.random.default_rng(seed)
    k = min(k, len(vectors))
    centroids = vectors[rng.choice(len(vectors), size=k, replace=False)]
    for _ in range(iterations):
        assign = np.argmax(vectors @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, vectors)
        empty = np.linalg.norm(sums, axis=1) < 1e-12
        sums[empty] = centroids[empty]
        centroids = normalised(sums)
    return centroids


class OneShotModel:
    """Class prototypes and a labelled voxel bank from the support scan."""

    def __init__(
        self,
        support: StoredEmbedding,
        label: np.ndarray,
        class_ids: Sequence[int],
        cfg: OneShotConfig,
        transform: FeatureTransform,
    ) -> None:
        rng = np.random.default_rng(cfg.seed)
        self.cfg = cfg
        self.transform = transform
        self.class_ids = [int(c) for c in class_ids]
        flat = support.embedding.reshape(-1, support.dim)
        labels = label.reshape(-1)
        body = support.body.reshape(-1)
        # class index per support voxel: 0 background, i + 1 for class_ids[i]; other ids: background
        lookup = np.zeros(256, dtype=np.int64)
        lookup[self.class_ids] = np.arange(1, len(self.class_ids) + 1)
        target = lookup[labels]
        prototypes = []
        for index, class_id in enumerate(self.class_ids, start=1):
            members = np.flatnonzero(target == index)
            if not len(members):
                raise DataError(
                    f"support label: id {class_id} covers no voxel of the embedding grid"
                )
            prototypes.append(normalised(transform.apply(flat[members]).mean(axis=0)))
        self.prototypes = (
            np.stack(prototypes) if prototypes else np.zeros((0, support.dim), np.float32)
        )
        background = np.flatnonzero((target == 0) & body)
        if not len(background):
            background = np.flatnonzero(target == 0)
        sample = rng.choice(background, size=min(len(background), 50_000), replace=False)
        self.background = spherical_kmeans(
            transform.apply(flat[np.sort(sample)]), cfg.background_prototypes, cfg.seed
        )
        # the neighbour bank: every class gets an equal share, the background the rest
        share = cfg.bank_size // (len(self.class_ids) + 1)
        chosen = []
        for index in range(1, len(self.class_ids) + 1):
            members = np.flatnonzero(target == index)
            chosen.append(rng.choice(members, size=min(share, len(members)), replace=False))
        rest = cfg.bank_size - sum(len(c) for c in chosen)
        chosen.append(rng.choice(background, size=min(rest, len(background)), replace=False))
        bank = np.sort(np.concatenate(chosen))
        self.bank = transform.apply(flat[bank])
        self.bank_classes = target[bank]

    @property
    def num_classes(self) -> int:
        return len(self.class_ids) + 1

    def probabilities(self, query: StoredEmbedding) -> np.ndarray:
        """(C, X', Y', Z') float32 class probabilities (background first) on the query's grid."""
        parts = []
        if self.cfg.method in ("prototype", "both"):
            parts.append(self._over_body(query, 1, self._prototype_probabilities))
        if self.cfg.method in ("neighbours", "both"):
            parts.append(
                self._over_body(query, self.cfg.neighbour_step, self._neighbour_probabilities)
            )
        return parts[0] if len(parts) == 1 else np.mean(parts, axis=0)

    def _over_body(self, query: StoredEmbedding, step: int, function) -> np.ndarray:
        """``function`` (unit vectors -> (N, C) probabilities) at the body voxels of every
        ``step``-th voxel of the query grid; background outside the body; linearly interpolated
        to the full grid when ``step > 1``."""
        grid = np.asarray(query.embedding)[::step, ::step, ::step]
        body = query.body[::step, ::step, ::step]
        out = np.zeros((self.num_classes, *body.shape), dtype=np.float32)
        out[0] = 1.0  # outside the body: background
        flat_out = out.reshape(self.num_classes, -1)
        flat = grid.reshape(-1, query.dim)
        inside = np.flatnonzero(body.reshape(-1))
        for start in range(0, len(inside), CHUNK):
            index = inside[start : start + CHUNK]
            flat_out[:, index] = function(self.transform.apply(flat[index])).T
        if step == 1:
            return out
        positions = [np.arange(n, dtype=np.float64) / step for n in query.shape]
        return resample_linear(out, positions)

    def _prototype_probabilities(self, vectors: np.ndarray) -> np.ndarray:
        scores = np.concatenate(
            [(vectors @ self.background.T).max(axis=1, keepdims=True), vectors @ self.prototypes.T],
            axis=1,
        )
        return softmax(scores / self.cfg.temperature)

    def _neighbour_probabilities(self, vectors: np.ndarray) -> np.ndarray:
        similarity = torch.from_numpy(vectors) @ self._bank_tensor.T
        k = min(self.cfg.neighbours, similarity.shape[1])
        values, top = torch.topk(similarity, k, dim=1)
        weights = torch.softmax(values / self.cfg.temperature, dim=1)
        votes = torch.zeros((len(vectors), self.num_classes), dtype=torch.float32)
        votes.scatter_add_(1, self._bank_class_tensor[top], weights)
        return votes.numpy()

    @property
    def _bank_tensor(self):
        return torch.from_numpy(self.bank)

    @property
    def _bank_class_tensor(self):
        return torch.from_numpy(self.bank_classes)


def softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def to_preprocessed_grid(probs: np.ndarray, stride: int, shape: Sequence[int]) -> np.ndarray:
    """Trilinear upsampling of (C, X', Y', Z') from the embedding grid (block centres) to the
    preprocessed grid ``shape``."""

    if stride == 1:
        return probs
    positions = [(np.arange(n, dtype=np.float64) - (stride - 1) / 2.0) / stride for n in shape]
    return resample_linear(probs, positions)


def clean_components(probs: np.ndarray, body: np.ndarray | None = None) -> np.ndarray:
    """Per organ (channels 1..), keep the connected component (26-connected) of the voxels where
    it wins with the highest mean probability (seed 000's eq. 8); the organ's probability is set
    to 0 elsewhere, except one voxel around that component (so trilinear resampling keeps its edge)."""
    import cc3d
    from scipy.ndimage import binary_dilation

    winner = np.argmax(probs, axis=0)
    cleaned = probs.copy()
    for channel in range(1, probs.shape[0]):
        mask = winner == channel
        components, count = cc3d.connected_components(
            mask.astype(np.uint8), connectivity=26, return_N=True
        )
        if count <= 1:
            continue
        best = int(np.argmax(component_confidences(components, probs[channel], count))) + 1
        keep = binary_dilation(components == best, iterations=1)
        cleaned[channel][~keep] = 0.0
    return cleaned


def segment_query(
    support: StoredEmbedding,
    label: np.ndarray,
    class_ids: Sequence[int],
    cfg: OneShotConfig,
    query: StoredEmbedding,
    interpolation: Interpolation = "linear",
) -> tuple[np.ndarray, np.ndarray]:
    """(label on the query's own grid, its affine). The embeddings are standardised with the
    statistics of the support's and this query's body voxels (so a query's result depends on
    the support and itself only)."""

    model = OneShotModel(support, label, class_ids, cfg, FeatureTransform.fit([support, query]))
    probs = model.probabilities(query)
    meta = query.preprocess_meta
    probs = to_preprocessed_grid(probs, query.stride, meta["shape"])
    if cfg.cca == "3d":
        probs = clean_components(probs)
    return label_in_original_geometry(
        probs, meta, model.class_ids, "ce", interpolation=interpolation
    )


def label_ids(support_label: np.ndarray, classes: Sequence[int] | None) -> list[int]:
    present = [int(i) for i in np.unique(support_label) if i > 0]
    if classes is None:
        if not present:
            raise DataError("the support label has no labelled voxel on the embedding grid")
        return present
    missing = [c for c in classes if c not in present]
    if missing:
        raise DataError(
            f"--classes: id {missing[0]} is not in the support label (ids present: {present or 'none'})"
        )
    return [int(c) for c in classes]


def one_shot_files(
    weights: str | os.PathLike,
    support_image: str | os.PathLike,
    support_label: str | os.PathLike,
    queries: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    classes: Sequence[int] | None = None,
    cfg: OneShotConfig | None = None,
    embeddings: str | os.PathLike | None = None,
    stride: int | str = "auto",
    modality: str | None = None,
    query_modality: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[Path]:
    """Segment ``queries`` from the labelled support; writes ``<name>_seg.nii.gz``; returns paths."""
    from tqdm.auto import tqdm

    cfg = cfg or OneShotConfig()
    cfg.check()
    query_paths = [Path(q) for q in queries]
    if not query_paths:
        raise DataError("one-shot: no query image given")
    for path in [Path(support_image), Path(support_label), *query_paths]:
        if not path.exists():
            raise DataError(f"one-shot: input not found: {path}")

    names = [embedding_name(p) for p in [support_image, *query_paths]]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise DataError(
            f"one-shot: two inputs would both be embedded as '{clash[0]}' (the support and every "
            "query need distinct file or folder names)"
        )
    embedder = load_embedder(weights, device=device, modality=modality)
    cache = Path(embeddings) if embeddings else default_embeddings_dir(embedder.weights_sha256)
    (support,) = ensure_embeddings(
        embedder, [support_image], cache, stride=stride, progress=progress
    )
    label = support_label_on_grid(support, support_label)
    class_ids = label_ids(label, classes)
    if query_modality is not None and query_modality != embedder.modality:
        embedder = load_embedder(weights, device=device, modality=query_modality)
    # the queries at the support's stride (``auto`` is decided by the support): block means and
    # single voxels differ in distribution, so both sides must be on the same kind of grid
    stored = ensure_embeddings(
        embedder, query_paths, cache, stride=support.stride, progress=progress
    )
    out_dir = Path(out_dir)
    written = []
    for path, query in tqdm(
        list(zip(query_paths, stored, strict=True)),
        desc="one-shot",
        unit="scan",
        disable=not progress,
    ):
        label_map, affine = segment_query(support, label, class_ids, cfg, query)
        target = write_label_nifti(out_dir / output_name(path), label_map, affine)
        found = [c for c in class_ids if (label_map == c).any()]
        log.info("%s -> %s (%d of %d labels found)", path, target, len(found), len(class_ids))
        written.append(target)
    return written


__all__ = [
    "CCA_MODES",
    "METHODS",
    "OneShotConfig",
    "OneShotModel",
    "block_majority",
    "clean_components",
    "one_shot_files",
    "segment_query",
    "spherical_kmeans",
    "support_label_on_grid",
    "to_preprocessed_grid",
]
