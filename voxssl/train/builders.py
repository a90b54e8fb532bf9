"""Objects of a pretraining run built from the recipe, in one place (the loop reads no config)."""

from __future__ import annotations

import logging
from pathlib import Path

from voxssl.config.pretrain import PretrainConfig
from voxssl.config.recipe import Recipe
from voxssl.data.cache import CachedCase, open_cache
from voxssl.errors import ConfigError, DataError
from voxssl.transforms.intensity import IntensityScale, build_intensity_augmentations
from voxssl.transforms.local import build_local_augmentations
from voxssl.transforms.pairs import ViewGenerator
from voxssl.transforms.spatial import RandomGridTransform

log = logging.getLogger(__name__)

DATA_HINT = (
    "run `voxssl preprocess {recipe}` first (it reads data.sources and fills data.cache_dir), or try the "
    "whole pipeline on generated phantoms with `voxssl demo`"
)


def select_cases(recipe: Recipe, cfg: PretrainConfig) -> list[CachedCase]:
    """The cached cases to pretrain on: ``pretrain.sources`` (all when empty), one modality."""
    hint = DATA_HINT.format(recipe=recipe.source_file)
    cache_dir = Path(recipe.data.cache_dir)
    if not (cache_dir / "manifest.json").is_file():
        raise DataError(
            f"{recipe.source_file}: no preprocessed cache at data.cache_dir={cache_dir}; {hint}"
        )
    index = open_cache(cache_dir)
    if cfg.sources:
        cases = [case for source in cfg.sources for case in index.cases(source=source)]
    else:
        cases = index.cases()
    if not cases:
        raise DataError(
            f"{recipe.source_file}: the cache {cache_dir} has no case for pretrain.sources; {hint}"
        )
    modalities = sorted({case.modality for case in cases})
    if len(modalities) > 1:
        raise ConfigError(
            f"{recipe.source_file}: pretrain mixes modalities {modalities}; choose one with pretrain.sources"
        )
    channels = sorted({case.num_channels for case in cases})
    if len(channels) > 1:
        raise DataError(
            f"{recipe.source_file}: cached cases have different channel counts {channels}"
        )
    log.info("pretraining on %d cached %s cases from %s", len(cases), modalities[0], cache_dir)
    return cases


def intensity_scale(recipe: Recipe, modality: str) -> IntensityScale:
    """How HU map to the cached [0, 1] scale (the CT window); identity for MRI."""
    if modality == "ct":
        low, high = recipe.preprocess.ct.window_hu
        return IntensityScale(float(low), float(high))
    return IntensityScale.identity()


def build_view_generator(recipe: Recipe, cfg: PretrainConfig, modality: str) -> ViewGenerator:
    """Crops + vox2vec intensity augmentations + seed-paper local augmentations (+ Pix2Rep T)."""
    if cfg.intensity.enabled and cfg.intensity.units == "hu" and modality != "ct":
        raise ConfigError(
            f"{recipe.source_file}: pretrain.intensity.units is 'hu' but the data is {modality}; "
            f"use units: scaled with values on the [0, 1] scale"
        )
    augmentations = build_intensity_augmentations(cfg.intensity, intensity_scale(recipe, modality))
    augmentations += build_local_augmentations(cfg.local)
    sampler = None
    if cfg.equivariance.enabled:
        eq = cfg.equivariance
        # Odd quarter turns are drawn only for square axial planes (the view keeps its shape).
        sampler = RandomGridTransform(
            flip_prob=eq.flip_prob,
            rotation_turns=tuple(eq.rotation_turns),
            zoom_prob=eq.zoom_prob,
            zoom_factors=tuple(eq.zoom_factors),
        )
    return ViewGenerator(cfg.patch_size, cfg.positives_per_pair, augmentations, sampler)


__all__ = ["DATA_HINT", "build_view_generator", "intensity_scale", "select_cases"]
