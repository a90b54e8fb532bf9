"""Felzenszwalb superpixels per axial slice, inside the body, cached beside the volumes.

Each slice is resized in-plane to the training size S first (``min_size`` counts pixels of the
slice the network sees, as in SSL-ALPNet's 256 x 256 slices). Segments are numbered 1..n per slice;
0 is outside the body. Every segment Felzenszwalb returns is kept, including its segment 0 (the
public SSL-ALPNet code lost that one when relabelling).

Cache layout: ``<root>/<params tag>/<source>/<case_id>.npz`` holding ``superpixels`` (S, S, Z) and the parameters used;
one file per case, written atomically, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from voxssl.extras import require
from voxssl.fewshot.slices import resize_slices
from voxssl.utils.atomic import atomic_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SuperpixelParams:
    scale: float
    sigma: float
    min_size: int
    size: int  # in-plane size of the slices they are computed on

    def tag(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return f"s{self.size}-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def clean_body_mask(mask: np.ndarray) -> np.ndarray:
    """Largest 8-connected component of a 2D mask, holes filled."""
    mask = np.asarray(mask).astype(bool)
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(sizes.argmax()))


def slice_superpixels(image: np.ndarray, body: np.ndarray, params: SuperpixelParams) -> np.ndarray:
    """Superpixels of one (S, S) slice inside ``body``: int32, 0 outside, 1..n inside."""
    segmentation = require("skimage.segmentation", "few-shot superpixels")
    felzenszwalb, relabel_sequential = segmentation.felzenszwalb, segmentation.relabel_sequential

    segments = felzenszwalb(
        image.astype(np.float64),
        scale=params.scale,
        sigma=params.sigma,
        min_size=params.min_size,
        channel_axis=None,
    )
    body = clean_body_mask(body)
    shifted = np.where(body, segments.astype(np.int64) + 1, 0)  # +1 so that segment 0 survives
    relabelled, _, _ = relabel_sequential(shifted)
    return relabelled.astype(np.int32)


def volume_superpixels(image: np.ndarray, body: np.ndarray, params: SuperpixelParams) -> np.ndarray:
    """(X, Y, Z) image in [0, 1] and body mask -> (S, S, Z) superpixels."""

    image = image[0] if image.ndim == 4 else image
    depth = image.shape[-1]
    out = np.zeros((params.size, params.size, depth), dtype=np.int32)
    for z in range(depth):
        img = resize_slices(np.asarray(image[:, :, z], dtype=np.float32)[None], params.size)[
            0
        ].numpy()
        msk = resize_slices(
            np.asarray(body[:, :, z], dtype=np.float32)[None], params.size, nearest=True
        )[0].numpy()
        out[:, :, z] = slice_superpixels(img, msk > 0.5, params)
    return out


class SuperpixelStore:
    """One ``.npz`` per case under ``root/<params tag>/``."""

    def __init__(self, root: Path, params: SuperpixelParams) -> None:
        self.params = params
        self.root = Path(root) / params.tag()

    def path(self, case_id: str) -> Path:
        return self.root / f"{case_id}.npz"

    def has(self, case_id: str) -> bool:
        path = self.path(case_id)
        if not path.is_file():
            return False
        try:
            with np.load(path) as data:
                return json.loads(str(data["params"])) == asdict(self.params)
        except (OSError, ValueError, KeyError):
            return False

    def save(self, case_id: str, superpixels: np.ndarray) -> Path:
        target = self.path(case_id)
        with atomic_path(target) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, superpixels=superpixels, params=json.dumps(asdict(self.params)))
        return target

    def load(self, case_id: str) -> np.ndarray:
        if not self.path(case_id).is_file():
            raise FileNotFoundError(f"superpixels of {case_id} not computed: {self.path(case_id)}")
        with np.load(self.path(case_id)) as data:
            return data["superpixels"]


def case_store_key(case: Any) -> str:
    """``source/case_id`` for cached cases (ids are unique per source), else the case id."""
    return getattr(case, "key", None) or case.case_id


def _compute_one(case: Any, store: SuperpixelStore) -> str:
    image = np.asarray(case.image())
    body = case.body_mask()
    body = np.asarray(body) > 0 if body is not None else np.ones(image.shape[-3:], dtype=bool)
    store.save(case_store_key(case), volume_superpixels(image, body, store.params))
    return case_store_key(case)


def build_superpixels(
    cases: Iterable[Any],
    store: SuperpixelStore,
    num_workers: int = 1,
    progress: Callable[..., Iterable] | None = None,
) -> list[str]:
    """Compute the superpixels of every case not cached yet; returns the ids computed now.

    ``cases`` are cached cases (``case_id``, ``image()``, ``body_mask()``); they are sent to
    worker processes, so they must pickle (the cache's cases hold paths, not arrays).
    """
    todo = [case for case in cases if not store.has(case_store_key(case))]
    if not todo:
        return []
    log.info("computing superpixels of %d case(s) into %s", len(todo), store.root)
    done: list[str] = []
    if num_workers <= 1 or len(todo) == 1:
        iterator = progress(todo, total=len(todo)) if progress else todo
        for case in iterator:
            done.append(_compute_one(case, store))
        return done
    with ProcessPoolExecutor(max_workers=num_workers) as pool:
        futures = [pool.submit(_compute_one, case, store) for case in todo]
        finished = as_completed(futures)
        for future in progress(finished, total=len(todo)) if progress else finished:
            done.append(future.result())
    return done


__all__ = [
    "SuperpixelParams",
    "SuperpixelStore",
    "build_superpixels",
    "case_store_key",
    "clean_body_mask",
    "slice_superpixels",
    "volume_superpixels",
]
