"""Unlabelled 2D images for DINOv2 training, and the batches of crops and masks built from them.

The pool lists every image once: the axial slices of the cached cases (``dinov2.data.cache``) and
the image files of ``dinov2.data.folders``. Batches are drawn without replacement within an epoch:
the pool is permuted once per epoch (``numpy.random.default_rng([seed, epoch])``, the same on every
rank) and the permutations are concatenated into one stream, from which step ``k`` on rank ``r`` of
``W`` takes items ``[(k W + r) B, (k W + r + 1) B)``. The crops and masks of that batch come from
``default_rng([seed, r, k])``. So step ``k``'s batch depends only on (seed, rank, world size, k):
resuming at step ``k`` sees the batches an uninterrupted run sees, with any number of workers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from voxssl.data.cache import open_cache
from voxssl.data.cache_slices import axial_slices, read_axial_slice
from voxssl.data.image_folder import list_images, read_image_2d
from voxssl.data.pretrain_dataset import step_generator
from voxssl.errors import DataError
from voxssl.transforms.block_mask import BlockMaskGenerator, sample_batch_masks
from voxssl.transforms.multicrop import MultiCrop

log = logging.getLogger(__name__)


@dataclass
class ImagePool:
    """Cache slices (``slices`` into ``cases``) followed by image files (``files``)."""

    cases: list  # CachedCase
    slices: list  # SliceRef
    files: list[Path]

    def __len__(self) -> int:
        return len(self.slices) + len(self.files)

    def key(self, index: int) -> str:
        if index < len(self.slices):
            ref = self.slices[index]
            return f"{self.cases[ref.case].key}#z{ref.z}"
        return str(self.files[index - len(self.slices)])

    def image(self, index: int) -> torch.Tensor:
        """(H, W) float32 in [0, 1]."""

        if index < len(self.slices):
            ref = self.slices[index]
            return torch.from_numpy(read_axial_slice(self.cases[ref.case], ref.z))
        return torch.from_numpy(read_image_2d(self.files[index - len(self.slices)]))

    def describe(self) -> str:
        parts = []
        if self.slices:
            parts.append(f"{len(self.slices)} axial slices of {len(self.cases)} cached cases")
        if self.files:
            parts.append(f"{len(self.files)} image files")
        return " + ".join(parts) or "no images"


def build_pool(
    cache_dir: Path | None,
    cache_sources: list[str],
    min_body_fraction: float,
    folders: list[Path],
    source: str = "<recipe>",
) -> ImagePool:

    cases: list = []
    if cache_dir is not None:
        if not (Path(cache_dir) / "manifest.json").is_file():
            raise DataError(
                f"{source}: no preprocessed cache at data.cache_dir={cache_dir}; run `voxssl "
                f"preprocess {source}` first, or set dinov2.data.cache: false and give "
                f"dinov2.data.folders"
            )
        index = open_cache(cache_dir)
        if cache_sources:
            cases = [case for name in cache_sources for case in index.cases(source=name)]
        else:
            cases = index.cases()
    slices = axial_slices(cases, min_body_fraction)
    files: list[Path] = []
    for folder in folders:
        found = list_images(folder)
        if not found:
            raise DataError(
                f"{source}: dinov2.data.folders: {folder} holds no PNG/JPEG/DICOM image"
            )
        files += found
    pool = ImagePool(cases, slices, files)
    if len(pool) == 0:
        raise DataError(f"{source}: no image to train on ({pool.describe()})")
    return pool


def stream_indices(pool_size: int, seed: int, start: int, count: int) -> np.ndarray:
    """Items ``[start, start + count)`` of the stream of per-epoch permutations of the pool."""
    out = np.empty(count, dtype=np.int64)
    position, filled = start, 0
    while filled < count:
        epoch, offset = divmod(position, pool_size)
        permutation = np.random.default_rng([int(seed), int(epoch)]).permutation(pool_size)
        take = min(count - filled, pool_size - offset)
        out[filled : filled + take] = permutation[offset : offset + take]
        filled, position = filled + take, position + take
    return out


class MultiCropBatches(IterableDataset):
    """Yields ``{"step", "global_crops" (2B, 3, G, G), "local_crops" (L B, 3, l, l), "masks"
    (2B, N) bool, "keys"}`` for steps ``[start_step, end_step)``; crops are crop-major (all first
    global crops, then all second ones), as the model expects."""

    def __init__(
        self,
        pool: ImagePool,
        augment: MultiCrop,
        batch_size: int,
        patch_size: int,
        mask_ratio: tuple[float, float],
        mask_probability: float,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        end_step: int,
    ) -> None:
        super().__init__()
        self.pool, self.augment, self.batch_size = pool, augment, batch_size
        grid = augment.s.global_size // patch_size
        self.grid = (grid, grid)
        self.mask_generator = BlockMaskGenerator(self.grid)
        self.mask_ratio, self.mask_probability = mask_ratio, mask_probability
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.start_step, self.end_step = start_step, end_step

    def batch(self, step: int) -> dict:
        b = self.batch_size
        first = (step * self.world_size + self.rank) * b
        indices = stream_indices(len(self.pool), self.seed, first, b)
        rng = step_generator(self.seed, self.rank, step)
        global_crops, local_crops = [], []
        for index in indices:
            g, loc = self.augment(self.pool.image(int(index)), rng)
            global_crops.append(g)
            local_crops.append(loc)
        # (B, V, 3, S, S) -> crop-major (V B, 3, S, S)
        crop_major = lambda crops: torch.stack(crops).transpose(0, 1).flatten(0, 1)  # noqa: E731
        masks = sample_batch_masks(
            2 * b,
            self.grid,
            rng,
            self.mask_ratio,
            self.mask_probability,
            self.mask_generator,
        )
        return {
            "step": step,
            "global_crops": crop_major(global_crops).contiguous(),
            "local_crops": crop_major(local_crops).contiguous(),
            "masks": torch.from_numpy(masks),
            "keys": [self.pool.key(int(i)) for i in indices],
        }

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start_step + worker, self.end_step, workers):
            yield self.batch(step)


__all__ = ["ImagePool", "MultiCropBatches", "build_pool", "stream_indices"]
