"""Step k's batch depends only on (seed, rank, k), whatever the number of data workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxssl.config.pretrain import LocalAugConfig
from voxssl.data.cache import open_cache
from voxssl.data.pretrain_dataset import PairBatchSpec, PretrainPairs, make_loader
from voxssl.transforms.local import build_local_augmentations
from voxssl.transforms.pairs import ViewGenerator


def _dataset(cache, start=0, end=5, rank=0):
    views = ViewGenerator(
        (16, 16, 8), 32, build_local_augmentations(LocalAugConfig(shuffle_blocks=20))
    )
    return PretrainPairs(
        open_cache(cache).cases(),
        views,
        PairBatchSpec(3, 2, 32),
        seed=11,
        rank=rank,
        start_step=start,
        end_step=end,
    )


def _same(a, b):
    assert a["step"] == b["step"] and a["case_ids"] == b["case_ids"]
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(value, b[key], rtol=0, atol=0)


@pytest.mark.multiprocess
def test_batches_do_not_depend_on_workers_or_start(phantom_cache):
    serial = list(make_loader(_dataset(phantom_cache), num_workers=0))
    assert [b["step"] for b in serial] == [0, 1, 2, 3, 4]
    parallel = list(make_loader(_dataset(phantom_cache), num_workers=2))
    assert [b["step"] for b in parallel] == [0, 1, 2, 3, 4]
    for a, b in zip(serial, parallel, strict=True):
        _same(a, b)
    resumed = list(make_loader(_dataset(phantom_cache, start=3), num_workers=0))
    for a, b in zip(serial[3:], resumed, strict=True):
        _same(a, b)


def test_batch_layout_and_rank_dependence(phantom_cache):
    batch = _dataset(phantom_cache).batch(2)
    assert batch["view1"].shape == (3, 1, 16, 16, 8) and batch["positions1"].shape == (3, 32, 3)
    assert batch["valid"].dtype == torch.bool and batch["valid"].any()
    # pairs_per_volume=2: pairs 0 and 1 come from one volume, pair 2 from a fresh draw
    assert batch["case_ids"][0] == batch["case_ids"][1]
    other_rank = _dataset(phantom_cache, rank=1).batch(2)
    assert not torch.equal(batch["view1"], other_rank["view1"])
    # valid positives index the same voxel of the clean crops
    for i in range(3):
        keep = batch["valid"][i]
        p1, p2 = batch["positions1"][i][keep], batch["positions2"][i][keep]
        v1 = batch["target1"][i, 0][tuple(p1.T)]
        v2 = batch["target2"][i, 0][tuple(p2.T)]
        np.testing.assert_array_equal(v1.numpy(), v2.numpy())
