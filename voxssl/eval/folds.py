"""Cross-validation splits and low-data subsets, reproducible and written as JSON.

Fold assignment: the case ids are sorted, permuted with ``numpy.random.RandomState(seed)`` and cut
into k consecutive chunks (the first ``n % k`` chunks one longer). This is exactly scikit-learn's
``KFold(n_splits=k, shuffle=True, random_state=seed)`` on the sorted ids, so a split is the same on
every machine and matches code that used KFold (vox2vec: BTCV 5-fold, seed 42).

Low-data subsets draw a seeded permutation of a fold's training cases once and take its first n
(nested: the 4-case subset is inside the 8-case one), as in seed 004's 4 / 8 / 42-image runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from voxssl.errors import ConfigError, DataError
from voxssl.utils.atomic import atomic_write_text

#: number of folds of the named schemes
SCHEME_FOLDS = {"btcv3": 3, "btcv5": 5, "amos_mri5": 5}

SPLIT_FORMAT = "voxssl-splits/1"


@dataclass(frozen=True)
class Fold:
    index: int
    train: tuple[str, ...]
    test: tuple[str, ...]
    val: tuple[str, ...] = ()
    n_train: int | str = "all"  # the low-data subset this fold was cut to

    @property
    def name(self) -> str:
        return f"fold{self.index}" if self.n_train == "all" else f"fold{self.index}_n{self.n_train}"


@dataclass
class Splits:
    scheme: str
    seed: int
    folds: list[Fold] = field(default_factory=list)

    def to_json(self) -> str:
        data = {"format": SPLIT_FORMAT, "scheme": self.scheme, "seed": self.seed}
        data["folds"] = [
            {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(f).items()}
            for f in self.folds
        ]
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "<splits>") -> Splits:
        try:
            data = json.loads(text)
            if data.get("format") != SPLIT_FORMAT:
                raise DataError(
                    f"{source}: not a voxssl split file (format {data.get('format')!r})"
                )
            folds = [
                Fold(
                    index=int(f["index"]),
                    train=tuple(f["train"]),
                    test=tuple(f["test"]),
                    val=tuple(f.get("val", ())),
                    n_train=f.get("n_train", "all"),
                )
                for f in data["folds"]
            ]
            return cls(scheme=data["scheme"], seed=int(data["seed"]), folds=folds)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{source}: malformed split file ({err})") from None


def kfold_assignment(case_ids: Sequence[str], k: int, seed: int) -> list[list[str]]:
    """Test cases of each of the k folds (scikit-learn KFold(shuffle=True) semantics)."""
    ids = sorted(case_ids)
    if len(set(ids)) != len(ids):
        raise DataError("case ids are not unique; cannot build folds")
    if len(ids) < k:
        raise DataError(f"{len(ids)} labelled cases cannot be split into {k} folds")
    order = np.arange(len(ids))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(k, len(ids) // k)
    sizes[: len(ids) % k] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [[ids[j] for j in sorted(order[bounds[i] : bounds[i + 1]])] for i in range(k)]


def make_stratified_splits(
    ids: Sequence[str], labels: Sequence[int], k: int, seed: int, val_fraction: float = 0.0
) -> Splits:
    """k folds of ``ids`` with every class spread evenly over the folds (classification).

    Per class, the sorted ids are permuted with ``numpy.random.RandomState(seed)`` and dealt to
    the folds in turn; the validation part of each training part is drawn the same way, per class,
    with ``RandomState(seed + 1000 + fold)`` (``round(n_class * val_fraction)`` of each class).
    """
    if len(set(ids)) != len(ids):
        raise DataError("sample ids are not unique; cannot build folds")
    by_class: dict[int, list[str]] = {}
    for sample_id, label in sorted(zip(ids, labels, strict=True)):
        by_class.setdefault(int(label), []).append(sample_id)
    small = {c: len(v) for c, v in by_class.items() if len(v) < k}
    if small:
        raise DataError(
            f"stratified {k}-fold split: class(es) {sorted(small)} have fewer than {k} samples "
            f"({small}); lower cv.k"
        )
    tests: list[list[str]] = [[] for _ in range(k)]
    offset = 0
    for label in sorted(by_class):
        members = by_class[label]
        order = np.random.RandomState(seed + label).permutation(len(members))
        for position, index in enumerate(order):
            tests[(offset + position) % k].append(members[index])
        offset += len(members)  # the next class starts where this one ended: balanced sizes
    label_of = dict(zip(ids, labels, strict=True))
    folds = []
    for index, test in enumerate(tests):
        test_set = set(test)
        train = [i for i in sorted(ids) if i not in test_set]
        val: set[str] = set()
        rng = np.random.RandomState(seed + 1000 + index)
        for label in sorted(by_class):
            members = [i for i in train if label_of[i] == label]
            n_val = round(len(members) * val_fraction)
            val.update(members[j] for j in rng.permutation(len(members))[:n_val])
        folds.append(
            Fold(
                index,
                tuple(i for i in train if i not in val),
                tuple(sorted(test)),
                tuple(i for i in train if i in val),
            )
        )
    return Splits("stratified_kfold", seed, folds)


def make_splits(
    case_ids: Sequence[str],
    scheme: str,
    k: int = 5,
    seed: int = 42,
    val_fraction: float = 0.0,
    test_cases: Sequence[str] = (),
) -> Splits:
    """Folds of ``case_ids`` under ``scheme`` (btcv3 | btcv5 | amos_mri5 | kfold | holdout)."""
    if scheme == "holdout":
        missing = sorted(set(test_cases) - set(case_ids))
        if not test_cases or missing:
            raise ConfigError(
                f"cv.test_cases: holdout needs existing test cases (unknown: {missing[:5]})"
            )
        train = [c for c in sorted(case_ids) if c not in set(test_cases)]
        folds = [_with_val(Fold(0, tuple(train), tuple(sorted(test_cases))), val_fraction, seed)]
        return Splits(scheme, seed, folds)
    num = SCHEME_FOLDS.get(scheme, k)
    tests = kfold_assignment(case_ids, num, seed)
    folds = []
    for index, test in enumerate(tests):
        train_ids = tuple(c for c in sorted(case_ids) if c not in set(test))
        folds.append(_with_val(Fold(index, train_ids, tuple(test)), val_fraction, seed))
    return Splits(scheme, seed, folds)


def _with_val(fold: Fold, val_fraction: float, seed: int) -> Fold:
    n_val = round(len(fold.train) * val_fraction)
    if n_val == 0:
        return fold
    order = list(np.random.RandomState(seed + 1000 + fold.index).permutation(len(fold.train)))
    val = {fold.train[i] for i in order[:n_val]}
    return replace(
        fold,
        train=tuple(c for c in fold.train if c not in val),
        val=tuple(c for c in fold.train if c in val),
    )


def low_data_subset(fold: Fold, n: int | str, seed: int) -> Fold:
    """The fold with its training cases cut to the first ``n`` of a seeded permutation."""
    if n == "all":
        return fold
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"cv.n_train: {n!r} must be a positive integer or 'all'")
    if n > len(fold.train):
        raise ConfigError(
            f"cv.n_train: {n} training cases requested, fold {fold.index} has {len(fold.train)}"
        )
    order = np.random.RandomState(seed + fold.index).permutation(len(fold.train))
    keep = {fold.train[i] for i in order[:n]}
    return replace(fold, train=tuple(c for c in fold.train if c in keep), n_train=n)


def save_splits(splits: Splits, path: Path) -> Path:
    return atomic_write_text(path, splits.to_json())


def load_splits(path: Path, case_ids: Sequence[str] | None = None) -> Splits:
    """Read a split file; with ``case_ids``, check that every listed case exists."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cv.split_file: {path} not found")
    splits = Splits.from_json(path.read_text(encoding="utf-8"), source=str(path))
    if case_ids is not None:
        known = set(case_ids)
        for fold in splits.folds:
            unknown = sorted(set(fold.train + fold.test + fold.val) - known)
            if unknown:
                raise DataError(
                    f"{path}: fold {fold.index} lists cases not in the cache: {unknown[:5]}"
                )
    return splits


__all__ = [
    "SCHEME_FOLDS",
    "Fold",
    "Splits",
    "kfold_assignment",
    "load_splits",
    "low_data_subset",
    "make_splits",
    "make_stratified_splits",
    "save_splits",
]
