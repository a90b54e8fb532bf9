"""A plain folder of NIfTI scans, optionally with a folder of label maps.

Labels match images by a key that drops what data sets add to names: the ``_0000`` channel
suffix, ``img``/``image``/``label``/``seg``/``mask`` prefixes and ``_label``/``_seg``/``_mask``/
``_gt`` suffixes (``img0001.nii.gz`` <-> ``label0001.nii.gz``, ``ct_7_0000`` <-> ``ct_7``,
``p3.nii.gz`` <-> ``p3_seg.nii.gz``). Two files with the same key are an error. Images with
``_0000`` and ``_0001``... of the same case become one multi-channel case.

The recipe's ``modality`` is required. Label ids are canonical unless ``label_map`` says
otherwise (source id -> organ name or id, ``background``, ``ignore``); ids left out of a given
``label_map`` become background.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from voxssl.data.adapters.base import (
    Adapter,
    SourceContext,
    is_nifti,
    nifti_stem,
    parse_label_map,
    require_dir,
    require_modality,
    resolve_under,
)
from voxssl.data.case import Case
from voxssl.errors import DataError

logger = logging.getLogger(__name__)

PREFIX = re.compile(
    r"^(img|image|images|label|labels|seg|segmentation|mask)[_\-]?(?=.)", re.IGNORECASE
)
SUFFIX = re.compile(r"[_\-](label|labels|seg|segmentation|mask|gt)$", re.IGNORECASE)
CHANNEL = re.compile(r"_(\d{4})$")


@dataclass
class FolderOptions:
    images: str = "."  # relative to the root, or absolute
    labels: str | None = None  # folder of label maps, matched to images by name
    label_map: dict[int | str, int | str] | None = None
    recursive: bool = False  # also look in sub-folders of ``images``


def match_key(stem: str) -> str:
    """The name an image and its label share (see the module docstring)."""
    stem = CHANNEL.sub("", stem) if stem.endswith("_0000") else stem
    stem = PREFIX.sub("", stem)
    return SUFFIX.sub("", stem)


def find_folder(ctx: SourceContext, options: FolderOptions) -> list[Case]:
    modality = require_modality(ctx, "folder")
    image_dir = require_dir(
        resolve_under(ctx.root, options.images), f"{ctx.where}.options.images folder"
    )
    label_dir = None
    if options.labels is not None:
        label_dir = require_dir(
            resolve_under(ctx.root, options.labels), f"{ctx.where}.options.labels folder"
        )
    label_map = parse_label_map(options.label_map, f"{ctx.where}.options.label_map") or None
    images = _nifti_under(image_dir, options.recursive, exclude=label_dir)
    labels = (
        _index_by_key(_nifti_under(label_dir, options.recursive), label_dir) if label_dir else {}
    )
    grouped = _group_channels(images)
    _check_distinct_keys(grouped, image_dir)
    cases = []
    for case_id, channels in sorted(grouped.items()):
        label = labels.pop(match_key(case_id), None)
        cases.append(
            Case(
                case_id=case_id,
                image=channels[0],
                modality=modality,
                label=label,
                label_map=label_map if label is not None else None,
                channels=tuple(channels) if len(channels) > 1 else (),
                metadata={"dataset": ctx.root.name},
            )
        )
    if labels:
        logger.warning(
            "%s: %d label files match no image, e.g. %s",
            label_dir,
            len(labels),
            next(iter(labels.values())),
        )
    return cases


def _nifti_under(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    found = []
    for path in paths:
        if not path.is_file() or not is_nifti(path):
            continue
        if exclude is not None and exclude.resolve() in path.resolve().parents:
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        found.append(path)
    return sorted(found)


def _group_channels(images: list[Path]) -> dict[str, list[Path]]:
    """Case id -> channel paths. ``x_0000``, ``x_0001`` form one case when ``x_0001`` exists."""
    stems = {nifti_stem(p) for p in images}
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in images:
        stem = nifti_stem(path)
        match = CHANNEL.search(stem)
        base = stem[: match.start()] if match else stem
        multi = match is not None and (f"{base}_0001" in stems or int(match.group(1)) == 0)
        if multi:
            channel = int(match.group(1))
        else:
            base, channel = stem, 0
        if channel in grouped[base]:
            raise DataError(
                f"two scans give the case id {base!r}: {grouped[base][channel]} and {path}"
            )
        grouped[base][channel] = path
    result = {}
    for base, channels in grouped.items():
        if sorted(channels) != list(range(len(channels))):
            raise DataError(
                f"case {base!r}: channel files {sorted(channels)} are not _0000, _0001, ... in a row"
            )
        result[base] = [channels[i] for i in range(len(channels))]
    return result


def _check_distinct_keys(grouped: dict[str, list[Path]], image_dir: Path) -> None:
    """Two scans whose names reduce to the same key (``img0001``, ``0001``) could share a label."""
    seen: dict[str, str] = {}
    for case_id in sorted(grouped):
        key = match_key(case_id)
        if key in seen:
            raise DataError(
                f"{image_dir}: scans {seen[key]!r} and {case_id!r} both match labels named {key!r}"
            )
        seen[key] = case_id


def _index_by_key(labels: list[Path], label_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in labels:
        key = match_key(nifti_stem(path))
        if key in index:
            raise DataError(
                f"{label_dir}: {index[key].name} and {path.name} both match scans named {key!r}"
            )
        index[key] = path
    return index


ADAPTER = Adapter(
    name="folder",
    options=FolderOptions,
    find=find_folder,
    description="a folder of NIfTI scans (options.images) with optional labels (options.labels)",
)
