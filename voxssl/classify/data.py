"""The labelled images of a ``classify`` recipe: cache slices labelled from the label maps, or a
``root/<class>/`` folder (see :mod:`voxssl.config.classify`), and their torch dataset."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from voxssl.config.classify import ClassifyAugmentConfig, ClassifyConfig
from voxssl.data.cache import open_cache
from voxssl.data.cache_slices import body_fractions, organ_counts, read_axial_slice
from voxssl.data.image_folder import labelled_images, read_image_2d
from voxssl.errors import ConfigError, DataError
from voxssl.models.plan import preprocessing_plan
from voxssl.transforms.classification import classification_input
from voxssl.vocabulary import ORGANS, organ_id, organ_name

log = logging.getLogger(__name__)

NONE_CLASS = "none"


@dataclass
class ClassificationData:
    """Samples ``i``: ``keys[i]`` (unique id), ``groups[i]`` (what folds split: the case of a
    slice, the image itself for folders), ``labels[i]`` (index into ``class_names``)."""

    class_names: list[str]
    keys: list[str]
    groups: list[str]
    labels: np.ndarray
    description: str
    _cases: list = field(default_factory=list, repr=False)
    _slices: list = field(default_factory=list, repr=False)  # (case index, z) per sample
    _files: list[Path] = field(default_factory=list, repr=False)
    preprocessing: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.keys)

    def image(self, index: int) -> torch.Tensor:
        """(H, W) float32 in [0, 1]."""
        if self._slices:
            case, z = self._slices[index]
            return torch.from_numpy(read_axial_slice(self._cases[case], z))

        return torch.from_numpy(read_image_2d(self._files[index]))

    def class_counts(self, indices=None) -> dict[str, int]:
        labels = self.labels if indices is None else self.labels[np.asarray(indices, dtype=int)]
        return {name: int((labels == c).sum()) for c, name in enumerate(self.class_names)}


def _organ_ids(organs: list) -> list[int]:

    ids = []
    for organ in organs:
        if isinstance(organ, int):
            if organ not in ORGANS:
                raise ConfigError(f"classify.data.organs: {organ} is not a canonical organ id")
            ids.append(organ)
        else:
            try:
                ids.append(organ_id(organ))
            except KeyError as err:
                raise ConfigError(f"classify.data.organs: {err.args[0]}") from None
    return ids


def cache_data(cache_dir: Path, cfg: ClassifyConfig, preprocess=None) -> ClassificationData:
    """Axial slices of the labelled cached cases with labels from their label maps."""

    data = cfg.data
    cases = open_cache(cache_dir).cases(source=data.source, labelled=True)
    if not cases:
        raise DataError(
            f"cache {cache_dir} has no labelled case (source {data.source or 'any'}); "
            "slice labels come from the label maps"
        )
    organs = _organ_ids(data.organs)
    if data.task == "contains":
        names = [f"no_{organ_name(organs[0])}", organ_name(organs[0])]
    else:
        names = ([NONE_CLASS] if data.none_class else []) + [organ_name(o) for o in organs]
    keys, groups, labels, slices = [], [], [], []
    skipped = 0
    for index, case in enumerate(cases):
        counts, unknown = organ_counts(case, organs)
        usable = (body_fractions(case) >= data.min_body_fraction) & ~unknown
        skipped += int((~unknown).sum() == 0)
        for z in np.flatnonzero(usable):
            present = counts[z] >= data.min_pixels
            if data.task == "contains":
                label = int(present[0])
            elif present.any():
                label = int(np.argmax(np.where(present, counts[z], -1))) + int(data.none_class)
            elif data.none_class:
                label = 0
            else:
                continue
            keys.append(f"{case.key}#z{int(z)}")
            groups.append(case.key)
            labels.append(label)
            slices.append((index, int(z)))
    if skipped:
        log.warning("%d case(s) do not annotate %s: their slices are left out", skipped, names)
    modalities = sorted({c.modality for c in cases})
    preprocessing: dict[str, Any] = {"modality": modalities[0]} if len(modalities) == 1 else {}
    if preprocess is not None and len(modalities) == 1:
        preprocessing["cache"] = preprocessing_plan(modalities[0], preprocess)
    result = ClassificationData(
        class_names=names,
        keys=keys,
        groups=groups,
        labels=np.asarray(labels, dtype=np.int64),
        description=f"{len(keys)} axial slices of {len(cases)} labelled cases in {cache_dir}",
        _cases=cases,
        _slices=slices,
        preprocessing=preprocessing,
    )
    _check_classes(result, str(cache_dir))
    return result


def folder_data(cfg: ClassifyConfig) -> ClassificationData:
    if cfg.data.root is None:
        raise ConfigError("classify.data.root: the folder of labelled images is not set")
    root = Path(cfg.data.root)
    samples, names = labelled_images(root, list(cfg.data.classes) or None)
    result = ClassificationData(
        class_names=names,
        keys=[s.key for s in samples],
        groups=[s.key for s in samples],
        labels=np.asarray([s.label for s in samples], dtype=np.int64),
        description=f"{len(samples)} images in {root} ({', '.join(names)})",
        _files=[s.path for s in samples],
        preprocessing={"folder": str(root)},
    )
    _check_classes(result, str(root))
    return result


def _check_classes(data: ClassificationData, where: str) -> None:
    empty = [name for name, count in data.class_counts().items() if count == 0]
    if empty:
        raise DataError(
            f"{where}: no sample of class(es) {', '.join(empty)} ({data.class_counts()}); "
            "check classify.data"
        )


def build_data(recipe, cfg: ClassifyConfig) -> ClassificationData:
    if cfg.data.kind == "folder":
        return folder_data(cfg)
    cache_dir = Path(recipe.data.cache_dir)
    if not (cache_dir / "manifest.json").is_file():
        raise DataError(
            f"{recipe.source_file}: no preprocessed cache at data.cache_dir={cache_dir}; run "
            f"`voxssl preprocess {recipe.source_file}` first (classify.data.kind is cache)"
        )
    return cache_data(cache_dir, cfg, recipe.preprocess)


class ClassificationDataset(Dataset):
    """``dataset[(epoch, i)] -> (input (3, S, S), label)``; the augmentation of sample ``i`` in
    ``epoch`` draws from ``default_rng([seed, epoch, i])`` (reproducible with any workers)."""

    def __init__(
        self,
        data: ClassificationData,
        size: int,
        normalise_imagenet: bool,
        augment: ClassifyAugmentConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.data, self.size, self.normalise = data, size, normalise_imagenet
        self.augment, self.seed = augment, seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item) -> tuple[torch.Tensor, int]:

        epoch, index = item if isinstance(item, tuple) else (0, item)
        rng = None
        if self.augment is not None and self.augment.enabled:
            rng = np.random.default_rng([int(self.seed), int(epoch), int(index)])
        image = classification_input(
            self.data.image(index), self.size, self.normalise, self.augment, rng
        )
        return image, int(self.data.labels[index])


__all__ = [
    "NONE_CLASS",
    "ClassificationData",
    "ClassificationDataset",
    "build_data",
    "cache_data",
    "folder_data",
]
