"""The few-shot view of the preprocessed cache: cases, superpixel store, episode sources, folds."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxssl.config.fewshot import FewShotConfig
from voxssl.data.cache import open_cache
from voxssl.errors import ConfigError, DataError
from voxssl.fewshot.encoders import slice_context
from voxssl.fewshot.episodes import EpisodeSource, training_slice_mask
from voxssl.fewshot.protocol import cv_folds, support_scan
from voxssl.fewshot.slices import SliceVolume
from voxssl.fewshot.superpixels import SuperpixelParams, SuperpixelStore, case_store_key
from voxssl.vocabulary import organ_id

log = logging.getLogger(__name__)


def fewshot_cases(cache_dir: Path, source: str | None) -> list[Any]:

    return open_cache(cache_dir).cases(source=source)


def superpixel_store(cache_dir: Path, config: FewShotConfig) -> SuperpixelStore:
    sp = config.superpixels
    params = SuperpixelParams(
        scale=sp.scale, sigma=sp.sigma, min_size=sp.min_size, size=config.image_size
    )
    return SuperpixelStore(Path(cache_dir) / sp.cache_subdir, params)


def group_class_ids(config: FewShotConfig) -> list[list[int]]:
    """Canonical ids of every organ group (``eval.organ_groups`` names)."""
    groups = []
    for index, names in enumerate(config.eval.organ_groups):
        try:
            groups.append([organ_id(name) for name in names])
        except KeyError as err:
            raise ConfigError(f"fewshot.eval.organ_groups.{index}: {err.args[0]}") from None
    return groups


def episode_sources(
    cases: list[Any], store: SuperpixelStore, config: FewShotConfig, test_classes: list[int]
) -> list[EpisodeSource]:
    """Training volumes with their superpixels and the slices Setting 1/2 allows."""
    sources = []
    for case in cases:
        label = case.label()
        volume = SliceVolume(case.image(), config.image_size, context=slice_context(config.encoder))
        usable = training_slice_mask(label, volume.depth, test_classes, config.eval.setting)
        if label is None and config.eval.setting == 2 and test_classes:
            log.warning(
                "%s has no label: Setting 2 cannot remove its test-organ slices",
                case_store_key(case),
            )
        sources.append(
            EpisodeSource(case_store_key(case), volume, store.load(case_store_key(case)), usable)
        )
    return sources


def _has_label(case: Any) -> bool:
    flag = getattr(case, "has_label", None)
    return bool(flag) if flag is not None else case.label() is not None


@dataclass
class FoldSplit:
    fold: int
    query: list[Any]  # labelled cases scored in this fold
    support: Any  # the support case (outside the fold)
    train: list[Any]  # every other case (labelled or not)


FEWSHOT_SPLIT_FORMAT = "voxssl-fewshot-splits/1"


def read_split_file(path: Path) -> list[tuple[list[str], str]]:
    """(query case ids, support case id) of every fold of a voxssl-fewshot-splits/1 file."""
    import json

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"fewshot.eval.split_file: {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FEWSHOT_SPLIT_FORMAT:
            raise DataError(
                f"{path}: not a {FEWSHOT_SPLIT_FORMAT} file (format {data.get('format')!r})"
            )
        folds = sorted(data["folds"], key=lambda f: int(f["fold"]))
        out = [([str(c) for c in f["query"]], str(f["support"])) for f in folds]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{path}: malformed split file ({err})") from None
    if [int(f["fold"]) for f in folds] != list(range(len(folds))):
        raise DataError(f"{path}: folds must be numbered 0..{len(folds) - 1}")
    return out


def _splits_from_file(cases: list[Any], labelled: dict, path: Path) -> list[FoldSplit]:
    by_id: dict[str, list[str]] = {}
    for key, case in labelled.items():
        by_id.setdefault(case.case_id, []).append(key)
    ambiguous = sorted(cid for cid, keys in by_id.items() if len(keys) > 1)
    if ambiguous:
        raise ConfigError(
            f"fewshot.eval.split_file {path}: case ids {ambiguous[:3]} exist in several sources; "
            "set fewshot.source"
        )
    splits = []
    for index, (query, support) in enumerate(read_split_file(path)):
        missing = [c for c in [*query, support] if c not in by_id]
        if missing:
            raise DataError(
                f"{path}: fold {index} names cases without labels in the cache: {missing[:5]}"
            )
        keys = [by_id[c][0] for c in query]
        support_key = by_id[support][0]
        excluded = set(keys) | {support_key}
        train = [c for c in cases if case_store_key(c) not in excluded]
        splits.append(FoldSplit(index, [labelled[k] for k in keys], labelled[support_key], train))
    return splits


def fold_splits(cases: list[Any], config: FewShotConfig) -> list[FoldSplit]:
    """5-fold CV over the sorted ids of the labelled cases; support and query excluded from training
    (the published codes' ``get_scanids``: training = every scan but the fold and its support)."""
    labelled = {case_store_key(c): c for c in cases if _has_label(c)}
    if not labelled:
        raise DataError("few-shot evaluation needs labelled cases in the cache; none found")
    if config.eval.split_file is not None:
        splits = _splits_from_file(cases, labelled, config.eval.split_file)
        if len(splits) != config.eval.folds:
            raise ConfigError(
                f"fewshot.eval.split_file {config.eval.split_file} has {len(splits)} folds, "
                f"fewshot.eval.folds is {config.eval.folds}"
            )
        return splits
    folds = cv_folds(list(labelled), config.eval.folds)
    splits = []
    for index, fold in enumerate(folds):
        support_key = support_scan(
            list(labelled), fold, config.eval.support_index, config.eval.support_rule
        )
        excluded = set(fold) | {support_key}
        train = [c for c in cases if case_store_key(c) not in excluded]
        splits.append(FoldSplit(index, [labelled[k] for k in fold], labelled[support_key], train))
    return splits


def model_name(setting: int, group: int, fold: int) -> str:
    """Setting 2 trains one model per (organ group, fold); Setting 1 one per fold."""
    return f"fold{fold}" if setting == 1 else f"group{group}-fold{fold}"


__all__ = [
    "FEWSHOT_SPLIT_FORMAT",
    "FoldSplit",
    "episode_sources",
    "fewshot_cases",
    "fold_splits",
    "group_class_ids",
    "model_name",
    "read_split_file",
    "superpixel_store",
]
