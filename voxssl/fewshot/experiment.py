"""``voxssl few-shot train``: superpixels, then one ALPNet per (organ group, fold) of the protocol."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxssl.config.fewshot import FewShotConfig
from voxssl.fewshot.augment import EpisodeAugment
from voxssl.fewshot.data import (
    episode_sources,
    fewshot_cases,
    fold_splits,
    group_class_ids,
    model_name,
    superpixel_store,
)
from voxssl.fewshot.episodes import SuperpixelEpisodes
from voxssl.fewshot.model import build_alpnet
from voxssl.fewshot.superpixels import build_superpixels
from voxssl.fewshot.train import train_alpnet

log = logging.getLogger(__name__)

Progress = Callable[..., Iterable]


def prepare_superpixels(
    cases: list[Any], cache_dir: Path, config: FewShotConfig, progress: Progress | None = None
) -> None:
    store = superpixel_store(cache_dir, config)
    build_superpixels(cases, store, config.superpixels.num_workers, progress)


def training_jobs(
    config: FewShotConfig, groups: list[int] | None, folds: list[int] | None
) -> list[tuple[int, int]]:
    """(group, fold) pairs to train; Setting 1 trains one model per fold (group index 0)."""
    group_ids = list(range(len(config.eval.organ_groups))) if config.eval.setting == 2 else [0]
    if groups is not None and config.eval.setting == 2:
        group_ids = [g for g in group_ids if g in groups]
    fold_ids = [f for f in range(config.eval.folds) if folds is None or f in folds]
    return [(g, f) for g in group_ids for f in fold_ids]


def train_protocol(
    cache_dir: Path,
    config: FewShotConfig,
    models_dir: Path,
    groups: list[int] | None = None,
    folds: list[int] | None = None,
    progress: Progress | None = None,
    preprocess: dict[str, Any] | None = None,
    on_start: Callable[[], Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Train every (group, fold) model not trained yet; returns their training summaries.

    ``preprocess`` (the recipe's section, plain data) is stored with the weights so that
    ``voxssl few-shot segment`` preprocesses new scans the same way. ``on_start`` is called once,
    after the first model has been built (its encoder weights loaded) and before it trains: the
    CLI creates the run folder there, so a run that fails on its weights leaves nothing behind.
    """
    cases = fewshot_cases(cache_dir, config.source)
    prepare_superpixels(cases, cache_dir, config, progress)
    store = superpixel_store(cache_dir, config)
    splits = fold_splits(cases, config)
    class_groups = group_class_ids(config)
    summaries = {}
    for group, fold in training_jobs(config, groups, folds):
        name = model_name(config.eval.setting, group, fold)
        target = Path(models_dir) / f"{name}.safetensors"
        if target.is_file():
            log.info("%s exists, skipping", target)
            continue
        split = splits[fold]
        test_classes = class_groups[group] if config.eval.setting == 2 else []
        sources = episode_sources(split.train, store, config, test_classes)
        episodes = SuperpixelEpisodes(
            sources, EpisodeAugment(config.augment), config.min_superpixel_pixels
        )
        log.info("training %s on %d scans (%d usable slices)", name, len(sources), len(episodes))
        torch.manual_seed(config.seed + 1000 * group + fold)
        model = build_alpnet(config)
        if on_start is not None:
            on_start()
            on_start = None
        rng = np.random.default_rng([config.seed, group, fold])
        extra = {
            "group": group,
            "fold": fold,
            "support": split.support.case_id,
            "excluded_classes": test_classes,
            "train_cases": [c.case_id for c in split.train],
            "preprocess": preprocess or {},
        }
        bar = (
            (
                lambda it, start, total, name=name: progress(
                    it, total=total, initial=start, desc=name
                )
            )
            if progress
            else None
        )
        summaries[name] = train_alpnet(model, episodes, config, target, rng, bar, extra)
    return summaries


__all__ = ["prepare_superpixels", "train_protocol", "training_jobs"]
