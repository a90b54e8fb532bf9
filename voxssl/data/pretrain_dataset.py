"""Batches of view pairs for pretraining, drawn from the memory-mapped cache in worker processes.

Step ``k``'s batch on rank ``r`` depends only on ``(seed, r, k)``: its generator is
``numpy.random.default_rng([seed, r, k])``, whichever worker draws it and however many workers
there are. Resuming at step ``k`` therefore sees exactly the batches an uninterrupted run sees,
and there is no sampler state to save beyond the step.

Worker ``w`` of ``W`` draws steps ``start + w, start + w + W, ...``; PyTorch's DataLoader hands
out the batches of an iterable dataset round-robin over its workers, so they arrive in step order
(the loop checks the ``step`` field of every batch).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from voxssl.data.cache import CachedCase
from voxssl.errors import DataError

if TYPE_CHECKING:  # annotations only: importing the view generator pulls in MONAI's transforms
    from voxssl.transforms.pairs import PairSample, ViewGenerator

log = logging.getLogger(__name__)


def step_generator(seed: int, rank: int, step: int) -> np.random.Generator:
    """The generator of one step's batch: a function of (seed, rank, step) only."""
    return np.random.default_rng([int(seed), int(rank), int(step)])


@dataclass
class PairBatchSpec:
    pairs_per_step: int
    pairs_per_volume: int
    positives_per_pair: int


def collate_pairs(pairs: Sequence[PairSample], positives_per_pair: int) -> dict[str, Any]:
    """Stack P pairs. Positives are padded to ``positives_per_pair`` with ``valid`` marking real ones.

    Keys: ``view1``/``view2``/``target1``/``target2`` (P, C, X, Y, Z) float32; ``positions1``/
    ``positions2`` (P, N, 3) int64; ``valid`` (P, N) bool; ``start1``/``start2`` (P, 3) int64; with an
    equivariance transform also ``view3`` (P, C, X', Y', Z'), ``positions3`` (P, N, 3) and ``valid3``
    (P, N) (positives whose image under T stays inside view 3).
    """
    n = positives_per_pair
    count = len(pairs)
    positions1 = np.zeros((count, n, 3), dtype=np.int64)
    positions2 = np.zeros((count, n, 3), dtype=np.int64)
    valid = np.zeros((count, n), dtype=bool)
    for i, pair in enumerate(pairs):
        m = len(pair.positions1)
        positions1[i, :m], positions2[i, :m], valid[i, :m] = pair.positions1, pair.positions2, True
    stack = lambda name: torch.from_numpy(np.stack([getattr(p, name) for p in pairs]))  # noqa: E731
    batch: dict[str, Any] = {
        "view1": stack("view1"),
        "view2": stack("view2"),
        "target1": stack("target1"),
        "target2": stack("target2"),
        "positions1": torch.from_numpy(positions1),
        "positions2": torch.from_numpy(positions2),
        "valid": torch.from_numpy(valid),
        "start1": stack("start1"),
        "start2": stack("start2"),
    }
    if pairs[0].view3 is not None:
        views3 = [p.view3 for p in pairs]
        positions3_list = [p.positions3 for p in pairs]
        valid3_list = [p.valid3 for p in pairs]
        if any(v is None for v in (*views3, *positions3_list, *valid3_list)):
            raise ValueError("some pairs of one step have an equivariance view, others not")
        shapes = {v.shape for v in views3 if v is not None}
        if len(shapes) > 1:
            raise ValueError(
                f"equivariance views of one step have different shapes {sorted(shapes)}"
            )
        positions3 = np.zeros((count, n, 3), dtype=np.int64)
        valid3 = np.zeros((count, n), dtype=bool)
        for i, (pos, val) in enumerate(zip(positions3_list, valid3_list, strict=True)):
            if pos is not None and val is not None:
                positions3[i, : len(pos)] = pos
                valid3[i, : len(val)] = val
        batch["view3"] = stack("view3")
        batch["positions3"] = torch.from_numpy(positions3)
        batch["valid3"] = torch.from_numpy(valid3)
        batch["transforms"] = [p.transform for p in pairs]
    return batch


class _VolumeReader:
    """Opens cached cases as memory maps on first use (in the worker process, never pickled)."""

    def __init__(self, cases: Sequence[CachedCase]) -> None:
        self.cases = list(cases)
        self._open: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self._open:
            case = self.cases[index]
            image, body = case.image(), case.body_mask()
            if image.shape[-3:] != body.shape:
                raise DataError(
                    f"cache case {case.key}: image {image.shape} and body mask {body.shape} differ"
                )
            if not np.asarray(body).any():
                raise DataError(
                    f"cache case {case.key}: the body mask is empty; check its preprocessing"
                )
            self._open[index] = (image, body)
        return self._open[index]


class PretrainPairs(IterableDataset):
    """Yields ``{"step": int, **collate_pairs(...)}`` for steps ``[start_step, end_step)``.

    Each step draws ``pairs_per_step`` pairs in groups of ``pairs_per_volume`` consecutive pairs
    from one uniformly drawn volume (vox2vec: all pairs of a step from one volume).
    """

    def __init__(
        self,
        cases: Sequence[CachedCase],
        views: ViewGenerator,
        spec: PairBatchSpec,
        *,
        seed: int,
        rank: int = 0,
        start_step: int = 0,
        end_step: int,
    ) -> None:
        super().__init__()
        if not cases:
            raise DataError("no cached case to pretrain on")
        self.cases = list(cases)
        self.views, self.spec = views, spec
        self.seed, self.rank, self.start_step, self.end_step = seed, rank, start_step, end_step
        self._reader: _VolumeReader | None = None

    def batch(self, step: int) -> dict:
        """Step ``step``'s batch (deterministic)."""
        if self._reader is None:
            self._reader = _VolumeReader(self.cases)
        rng = step_generator(self.seed, self.rank, step)
        pairs: list[PairSample] = []
        while len(pairs) < self.spec.pairs_per_step:
            index = int(rng.integers(len(self.cases)))
            image, body = self._reader[index]
            group = min(self.spec.pairs_per_volume, self.spec.pairs_per_step - len(pairs))
            for _ in range(group):
                pairs.append(self.views(image, body, rng, case_id=self.cases[index].key))
        batch = collate_pairs(pairs, self.spec.positives_per_pair)
        batch["step"] = step
        batch["case_ids"] = [p.case_id for p in pairs]
        return batch

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for step in range(self.start_step + worker, self.end_step, workers):
            yield self.batch(step)


def _worker_init(_: int) -> None:
    # Each worker builds batches with numpy and small torch ops; one thread each avoids
    # oversubscribing the cores the training process needs.
    torch.set_num_threads(1)


def make_loader(
    dataset: IterableDataset,
    num_workers: int,
    prefetch_factor: int = 2,
    pin_memory: bool = False,
    worker_init_fn: Callable[[int], None] | None = None,
) -> DataLoader:
    """A DataLoader over whole batches (the dataset collates). Workers are persistent; their
    randomness never comes from torch's per-worker seeds, only from :func:`step_generator`."""
    kwargs: dict[str, Any] = {}
    if num_workers > 0:
        kwargs = {
            "prefetch_factor": prefetch_factor,
            "persistent_workers": True,
            "worker_init_fn": worker_init_fn or _worker_init,
        }
    return DataLoader(
        dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory, **kwargs
    )


__all__ = ["PairBatchSpec", "PretrainPairs", "collate_pairs", "make_loader", "step_generator"]
