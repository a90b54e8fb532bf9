"""``voxssl embed``: whole-volume voxel embeddings of scans, stored for explore and one-shot.

Each scan goes through exactly what ``voxssl predict`` does before its network (read and
reorient to RAS, preprocess with the parameters recorded in the weights' plan), then
:func:`voxssl.embedding.compute.embed_volume` writes its embedding on the preprocessed grid
(every ``stride``-th voxel block) into a float16 memory-mapped array with the geometry that maps
it back (:mod:`voxssl.embedding.store`). Finished scans are skipped when re-run with the same
weights and settings; an interrupted scan leaves nothing but a hidden staging folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxssl.config.data import CTPreprocessConfig, MRPreprocessConfig, PreprocessConfig
from voxssl.data.preprocess import preprocess_volume
from voxssl.data.readers import read_volume
from voxssl.device import resolve_device
from voxssl.embedding.compute import (
    DEFAULT_MARGIN,
    DEFAULT_WINDOW,
    STRIDES,
    check_stride,
    embed_volume,
    embedding_affine,
    embedding_shape,
)
from voxssl.embedding.store import (
    BODY_FILE,
    EMBEDDING_FILE,
    FORMAT,
    META_FILE,
    VERSION,
    StoredEmbedding,
    embedding_name,
    is_complete,
    source_fingerprint,
)
from voxssl.errors import ConfigError, DataError
from voxssl.eval.predict import preprocess_config_from_plan
from voxssl.hub.resolve import resolve_weights
from voxssl.hub.weights_cache import sha256_of
from voxssl.models.weights import load_backbone
from voxssl.utils.atomic import atomic_directory
from voxssl.utils.triple import float_triple

log = logging.getLogger(__name__)

AUTO = "auto"
#: ``stride="auto"`` keeps the embedding grid at or below this many voxels (explore's default:
#: one similarity map is then a matrix-vector product of at most 1 M rows).
AUTO_MAX_VOXELS = 1 << 20


def auto_stride(shape: Sequence[int], max_voxels: int = AUTO_MAX_VOXELS) -> int:
    """The smallest stride whose embedding grid of ``shape`` has at most ``max_voxels`` voxels."""

    for stride in STRIDES:
        if np.prod(embedding_shape(shape, stride)) <= max_voxels:
            return stride
    return STRIDES[-1]


@dataclass
class Embedder:
    """A backbone ready to embed scans the way its plan says they were preprocessed."""

    backbone: Any  # voxssl.models.fpn.FPN, in eval mode on ``device``
    plan: Any
    weights_path: Path
    weights_sha256: str
    modality: str
    preprocess: Any  # PreprocessConfig
    in_channels: int
    device: Any  # torch.device

    @property
    def dim(self) -> int:
        return int(sum(self.backbone.level_channels))


def preprocessing_for(plan, source: str, modality: str | None):
    """``(modality, PreprocessConfig)``: the plan's, or for another ``modality`` that modality's
    default intensity normalisation at the plan's spacing (cross-modality use, e.g. CT weights on
    an MR scan: logged, since the weights never saw that normalisation)."""

    plan_modality, cfg = preprocess_config_from_plan(plan, source)
    if modality is None or modality == plan_modality:
        return plan_modality, cfg
    if modality not in ("ct", "mr"):
        raise ConfigError(f"--modality must be 'ct' or 'mr', got {modality!r}")
    spacing = float_triple(plan.preprocessing["spacing"])
    log.warning(
        "%s: the weights were trained on %s; %s scans get voxssl's default %s normalisation at the "
        "plan's spacing %s",
        source,
        plan_modality.upper(),
        modality.upper(),
        modality.upper(),
        list(spacing),
    )
    if modality == "ct":
        return modality, PreprocessConfig(ct=CTPreprocessConfig(spacing=spacing))
    return modality, PreprocessConfig(mr=MRPreprocessConfig(spacing=spacing))


def load_embedder(
    weights: str | os.PathLike, device: str = "auto", modality: str | None = None
) -> Embedder:
    """Resolve ``--weights`` (file, folder, registry name, foreign checkpoint) and load its backbone."""

    path = resolve_weights(str(weights))
    torch_device = resolve_device(device, key="--device")
    backbone, plan = load_backbone(path, device=torch_device)
    chosen, cfg = preprocessing_for(plan, str(path), modality)
    return Embedder(
        backbone=backbone,
        plan=plan,
        weights_path=path,
        weights_sha256=sha256_of(path),
        modality=chosen,
        preprocess=cfg,
        in_channels=int(plan.model_config(source=str(path)).in_channels),
        device=torch_device,
    )


def fingerprint(
    embedder: Embedder, image: Path, stride: int | str, window: Sequence[int], margin: int
) -> dict[str, Any]:
    """Everything the stored embedding depends on (JSON types, compared after a JSON round trip)."""
    return {
        "source": source_fingerprint(image),
        "weights_sha256": embedder.weights_sha256,
        "modality": embedder.modality,
        "stride": stride if stride == AUTO else int(stride),
        "window": [int(w) for w in window],
        "margin": int(margin),
        "z_context": int(margin),  # embed_volume's z context is the tiling margin
        "version": VERSION,
    }


def block_mask(mask: np.ndarray, stride: int) -> np.ndarray:
    """A bool mask on the embedding grid: at least half of the block's voxels are set."""
    if stride == 1:
        return np.asarray(mask, dtype=bool)
    shape = embedding_shape(mask.shape, stride)
    padded = np.zeros([n * stride for n in shape], dtype=np.float32)
    padded[: mask.shape[0], : mask.shape[1], : mask.shape[2]] = mask
    blocks = padded.reshape(shape[0], stride, shape[1], stride, shape[2], stride)
    return blocks.mean(axis=(1, 3, 5)) >= 0.5


def embed_files(
    embedder: Embedder,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    stride: int | str = 1,
    window: Sequence[int] = DEFAULT_WINDOW,
    margin: int = DEFAULT_MARGIN,
    amp: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Embed every scan into ``out_dir/<name>/`` (skipping up-to-date ones); returns the folders.

    ``stride``: 1, 2, 4, 8, or ``"auto"``: the smallest one whose embedding grid has at most
    :data:`AUTO_MAX_VOXELS` voxels (decided per scan after preprocessing).
    """
    if stride != AUTO:
        check_stride(int(stride))
    paths = [Path(p) for p in images]
    if not paths:
        raise DataError("embed: no input image given")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"embed: input not found: {missing[0]}")
    names = [embedding_name(p) for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        clash = [str(p) for p, n in zip(paths, names, strict=True) if n == duplicates[0]]
        raise DataError(
            f"embed: {' and '.join(clash)} would both be stored as '{duplicates[0]}'; "
            "embed them into different --out folders"
        )
    out_dir = Path(out_dir)
    folders = []
    for path, name in zip(paths, names, strict=True):
        folder = out_dir / name
        expected = fingerprint(embedder, path, stride, window, margin)
        if is_complete(folder, expected):
            log.info("%s: embedding up to date in %s", path, folder)
        else:
            embed_one(embedder, path, folder, expected, stride, window, margin, amp, progress)
        folders.append(folder)
    return folders


def embed_one(
    embedder: Embedder,
    path: Path,
    folder: Path,
    fingerprint_: dict[str, Any],
    stride: int | str,
    window: Sequence[int],
    margin: int,
    amp: bool,
    progress: bool,
) -> Path:
    """Read, preprocess and embed one scan into ``folder`` (staged, then renamed)."""
    from tqdm.auto import tqdm

    volume = read_volume(path, allow_channels=embedder.in_channels > 1)
    if volume.num_channels != embedder.in_channels:
        raise DataError(
            f"{path}: {volume.num_channels} channel(s), the weights expect {embedder.in_channels}"
        )
    image, _, body, meta = preprocess_volume(
        volume, embedder.modality, embedder.preprocess, release_source=True
    )
    del volume
    stride = auto_stride(meta["shape"]) if stride == AUTO else int(stride)
    shape = embedding_shape(meta["shape"], stride)
    with (
        atomic_directory(folder) as staging,
        tqdm(desc=f"embed {path.name}", unit="tile", disable=not progress, leave=False) as bar,
    ):
        out = np.lib.format.open_memmap(
            staging / EMBEDDING_FILE, mode="w+", dtype=np.float16, shape=(*shape, embedder.dim)
        )

        def report(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        embed_volume(
            embedder.backbone,
            image,
            out,
            stride=stride,
            window=window,
            margin=margin,
            device=embedder.device,
            amp=amp,
            progress=report,
            z_context=margin,
        )
        if not np.isfinite(out).all():
            raise DataError(
                f"{path}: the embedding has non-finite values (float16 overflow: the weights' "
                "features exceed 65504)"
            )
        out.flush()
        del out
        np.save(staging / BODY_FILE, block_mask(body, stride))
        document = {
            "format": FORMAT,
            "version": VERSION,
            "name": folder.name,
            "shape": list(shape),
            "dim": embedder.dim,
            "stride": int(stride),
            "affine": embedding_affine(np.asarray(meta["affine"]), stride).tolist(),
            "level_channels": [int(c) for c in embedder.backbone.level_channels],
            "weights": str(embedder.weights_path),
            "architecture": embedder.plan.architecture,
            "fingerprint": fingerprint_,
            "preprocess_meta": meta,
        }
        (staging / META_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    log.info(
        "%s -> %s (%s x %d-d, stride %d)",
        path,
        folder,
        "x".join(map(str, shape)),
        embedder.dim,
        stride,
    )
    return folder


def ensure_embeddings(
    embedder: Embedder,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    **options: Any,
) -> list[StoredEmbedding]:
    """:func:`embed_files`, then open the folders (what explore and one-shot start with)."""
    return [StoredEmbedding.open(f) for f in embed_files(embedder, images, out_dir, **options)]


__all__ = [
    "AUTO",
    "AUTO_MAX_VOXELS",
    "Embedder",
    "auto_stride",
    "block_mask",
    "embed_files",
    "ensure_embeddings",
    "load_embedder",
    "preprocessing_for",
]
