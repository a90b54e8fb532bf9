"""Cross-validation splits: deterministic, disjoint, covering; split files round-trip."""

import numpy as np
import pytest

from voxssl.errors import ConfigError, DataError
from voxssl.eval.folds import (
    kfold_assignment,
    load_splits,
    low_data_subset,
    make_splits,
    save_splits,
)

BTCV_IDS = [f"img{i:04d}" for i in list(range(1, 11)) + list(range(21, 41))]


def test_kfold_is_deterministic_and_a_partition():
    a = kfold_assignment(BTCV_IDS, 5, seed=42)
    b = kfold_assignment(list(reversed(BTCV_IDS)), 5, seed=42)  # input order does not matter
    assert a == b
    assert sorted(c for fold in a for c in fold) == sorted(BTCV_IDS)
    assert [len(f) for f in a] == [6] * 5
    assert kfold_assignment(BTCV_IDS, 5, seed=43) != a


def test_kfold_matches_sklearn_kfold_semantics():
    # sklearn KFold(shuffle=True, random_state=s): RandomState(s).shuffle(arange(n)), chunks of
    # n // k with the first n % k one longer.
    ids = [f"c{i:02d}" for i in range(11)]
    order = np.arange(11)
    np.random.RandomState(7).shuffle(order)
    expected = [
        sorted(ids[j] for j in order[:4]),
        sorted(ids[j] for j in order[4:8]),
        sorted(ids[j] for j in order[8:]),
    ]
    assert kfold_assignment(ids, 3, seed=7) == expected


@pytest.mark.parametrize("scheme,num", [("btcv3", 3), ("btcv5", 5), ("amos_mri5", 5), ("kfold", 4)])
def test_schemes(scheme, num):
    splits = make_splits(BTCV_IDS, scheme, k=4, seed=0, val_fraction=0.2)
    assert len(splits.folds) == num
    for fold in splits.folds:
        assert set(fold.train).isdisjoint(fold.test) and set(fold.val).isdisjoint(fold.test)
        assert set(fold.train).isdisjoint(fold.val) and len(fold.val) > 0
        assert sorted(fold.train + fold.val + fold.test) == sorted(BTCV_IDS)


def test_low_data_subsets_nested_and_deterministic():
    fold = make_splits(BTCV_IDS, "btcv3", seed=42).folds[1]
    four, eight = low_data_subset(fold, 4, seed=3), low_data_subset(fold, 8, seed=3)
    assert len(four.train) == 4 and len(eight.train) == 8 and set(four.train) <= set(eight.train)
    assert four == low_data_subset(fold, 4, seed=3)
    assert four.test == fold.test and four.name == "fold1_n4"
    assert low_data_subset(fold, "all", seed=3) is fold
    with pytest.raises(ConfigError, match="n_train"):
        low_data_subset(fold, 100, seed=3)


def test_split_file_round_trip(tmp_path):
    splits = make_splits(BTCV_IDS, "btcv5", seed=42)
    path = save_splits(splits, tmp_path / "splits.json")
    again = load_splits(path, BTCV_IDS)
    assert again.folds == splits.folds and again.scheme == "btcv5" and again.seed == 42
    with pytest.raises(DataError, match="not in the cache"):
        load_splits(path, BTCV_IDS[:-3])


def test_holdout_and_errors():
    splits = make_splits(BTCV_IDS, "holdout", test_cases=BTCV_IDS[:2])
    assert splits.folds[0].test == tuple(BTCV_IDS[:2]) and len(splits.folds[0].train) == 28
    with pytest.raises(ConfigError):
        make_splits(BTCV_IDS, "holdout", test_cases=["nope"])
    with pytest.raises(DataError):
        kfold_assignment(BTCV_IDS[:2], 3, seed=0)
