"""AUC (MONAI ROCAUCMetric) against the pairwise definition; stratified folds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxssl.classify.metrics import auc_scores
from voxssl.eval.folds import make_stratified_splits


def _pairwise_auc(scores, positives) -> float:
    """P(score of a positive > score of a negative), ties counted one half (Mann-Whitney)."""
    pos = [s for s, p in zip(scores, positives, strict=True) if p]
    neg = [s for s, p in zip(scores, positives, strict=True) if not p]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_binary_auc_is_the_pairwise_probability():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    positive = np.round(rng.random(40) * 0.5 + 0.4 * labels, 2)  # with ties
    probs = np.stack([1 - positive, positive], 1)
    out = auc_scores(probs, labels, ["healthy", "tear"])
    assert out["auc"] == pytest.approx(_pairwise_auc(positive, labels == 1), abs=1e-9)
    assert out["per_class"] == {"tear": out["auc"]}


def test_multiclass_auc_is_one_vs_rest_and_its_mean():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    logits = rng.standard_normal((60, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    out = auc_scores(probs, labels, ["a", "b", "c"])
    expected = [_pairwise_auc(probs[:, c], labels == c) for c in range(3)]
    assert list(out["per_class"].values()) == pytest.approx(expected, abs=1e-9)
    assert out["auc"] == pytest.approx(np.mean(expected), abs=1e-9)


def test_a_fold_with_one_class_has_no_auc():
    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert math.isnan(auc_scores(probs, np.array([1, 1]), ["n", "p"])["auc"])


def test_stratified_folds_spread_every_class():
    ids = [f"img{i:03d}" for i in range(53)]
    labels = [0] * 40 + [1] * 13
    splits = make_stratified_splits(ids, labels, k=5, seed=3, val_fraction=0.25)
    label_of = dict(zip(ids, labels, strict=True))
    tests = [set(f.test) for f in splits.folds]
    assert set().union(*tests) == set(ids) and sum(map(len, tests)) == 53  # a partition
    for fold in splits.folds:
        assert not set(fold.train) & set(fold.val) and not (set(fold.train) | set(fold.val)) & set(
            fold.test
        )
        assert len(fold.train) + len(fold.val) + len(fold.test) == 53
        positives = sum(label_of[i] for i in fold.test)
        assert positives in (2, 3) and len(fold.test) in (10, 11)  # 13 / 5 and 53 / 5
        val_positives = sum(label_of[i] for i in fold.val)
        assert val_positives == round(sum(label_of[i] for i in fold.train + fold.val) * 0.25)
    again = make_stratified_splits(ids, labels, k=5, seed=3, val_fraction=0.25)
    assert again.to_json() == splits.to_json()
    from voxssl.errors import DataError

    with pytest.raises(DataError, match="fewer than 5"):
        make_stratified_splits(ids[:44], labels[:40] + [1] * 4, k=5, seed=0)
