"""A plain folder of scans: NIfTI files and DICOM series (one sub-folder per series), optionally
with a folder of label maps.

* **Scans**: every NIfTI file in ``images`` and every sub-folder of it that holds DICOM files (a
  series; its case id is the folder name). With ``recursive`` the whole tree below ``images`` is
  searched (nested series get ids like ``patient1_series2``).
* **Labels** match scans by a key that drops what data sets add to names: a ``_0000`` suffix,
  ``img``/``image``/``label``/``seg``/``mask`` prefixes and ``_label``/``_seg``/``_mask``/``_gt``
  suffixes (``img0001.nii.gz`` <-> ``label0001.nii.gz``, ``ct_7_0000`` <-> ``ct_7``,
  ``p3.nii.gz`` <-> ``p3_seg.nii.gz``). Two scans with the same key are an error.
* **Channels**: ``x_0000``, ``x_0001``... are channels of one case only under the nnU-Net layout
  (a ``dataset.json`` with ``channel_names`` beside ``images``) or with ``channels: true``;
  otherwise a ``_NNNN`` suffix is part of the case name (AMOS: ``amos_0001``, ``amos_0013``).
* **Unused files**: everything under the source root that is neither a scan, a label nor a slice of
  a series is listed in one log line, with a hint when it looks like a mistake (a labels folder not
  given as ``labels``, DICOM series deeper than ``recursive: false`` looks); a warning when scans
  are among them, information otherwise (notes, tables, sidecar files).

The recipe's ``modality`` is required. Label ids are canonical unless ``label_map`` says
otherwise (source id -> organ name or id, ``background``, ``ignore``); ids left out of a given
``label_map`` become background. Label maps and scans of another modality put among the scans
are refused by the preprocessing, which reads the voxels (:mod:`voxssl.data.modality_check`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from voxssl.data.adapters.base import (
    Adapter,
    SourceContext,
    is_junk,
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
#: File names that are never slices of a DICOM series.
DICOM_SKIP_NAMES = {"DICOMDIR", "Thumbs.db", "LOCKFILE", "VERSION"}
#: Folder names that usually hold label maps.
LABEL_FOLDER = re.compile(r"^(labels?|seg\w*|masks?|gt|ground.?truth)", re.IGNORECASE)
#: Unused files named individually in the warning (the rest are counted per folder).
MAX_LISTED = 30


@dataclass
class FolderOptions:
    images: str = "."  # relative to the root, or absolute
    labels: str | None = None  # folder of label maps, matched to images by name
    label_map: dict[int | str, int | str] | None = None
    recursive: bool = False  # also look in sub-folders of ``images`` (nested DICOM series too)
    # ``x_0000``, ``x_0001`` = channels of case x: None = only under the nnU-Net layout (a
    # dataset.json with channel_names beside ``images``), true = always, false = never
    channels: bool | None = None


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
    scan = _scan(image_dir, options.recursive, exclude=label_dir)
    labels = (
        _index_by_key(_nifti_under(label_dir, options.recursive), label_dir) if label_dir else {}
    )
    dataset_json, channel_names = _nnunet_channels(image_dir, ctx.root)
    channels_on = options.channels if options.channels is not None else channel_names is not None
    grouped = _group_channels(scan.niftis, channels_on, ctx.where)
    if channels_on and dataset_json is not None and channel_names:
        _check_channel_count(grouped, len(channel_names), dataset_json)
    for case_id, folder in scan.series.items():
        if case_id in grouped:
            raise DataError(
                f"two scans give the case id {case_id!r}: {grouped[case_id][0]} and {folder}"
            )
        grouped[case_id] = [folder]
    if label_dir is not None:
        _check_distinct_keys(grouped, image_dir)
    used = {p for paths in grouped.values() for p in paths} | scan.slices
    cases = []
    for case_id, channels in sorted(grouped.items()):
        label = labels.pop(match_key(case_id), None)
        if label is not None:
            used.add(label)
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
    if dataset_json is not None and channels_on:
        used.add(dataset_json)
    _report_unused(ctx, image_dir, label_dir, options, used)
    return cases


# ------------------------------------------------------------------------------------ discovery


@dataclass
class _Scan:
    niftis: list[Path]
    series: dict[str, Path]  # case id -> DICOM series folder
    slices: set[Path]  # every DICOM file of those series


def _scan(image_dir: Path, recursive: bool, exclude: Path | None) -> _Scan:
    niftis = _nifti_under(image_dir, recursive, exclude)
    folders = [image_dir]
    if recursive:
        folders += sorted(
            p
            for p in image_dir.rglob("*")
            if p.is_dir() and not _hidden(p, image_dir) and not _inside(p, exclude)
        )
    else:
        folders += sorted(
            p for p in image_dir.iterdir() if p.is_dir() and not is_junk(p) and p != exclude
        )
    series: dict[str, Path] = {}
    slices: set[Path] = set()
    for folder in folders:
        files = _dicom_files(folder)
        if len(files) < 2 and folder == image_dir:
            continue  # the images folder itself is a series only when it is one
        if not files:
            continue
        case_id = (
            "_".join(folder.relative_to(image_dir).parts) if folder != image_dir else folder.name
        )
        series[case_id] = folder
        slices.update(files)
    return _Scan(niftis, series, slices)


def _dicom_files(folder: Path) -> list[Path]:
    """The DICOM files directly in ``folder``: a ``.dcm`` name or the ``DICM`` magic at byte 128."""
    found = []
    for path in folder.iterdir():
        if not path.is_file() or is_junk(path) or path.name in DICOM_SKIP_NAMES:
            continue
        if path.suffix.lower() in (".dcm", ".dicom", ".ima") or _has_dicom_magic(path):
            found.append(path)
    return sorted(found)


def _has_dicom_magic(path: Path) -> bool:
    if is_nifti(path):
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _nifti_under(folder: Path, recursive: bool, exclude: Path | None = None) -> list[Path]:
    paths = folder.rglob("*") if recursive else folder.iterdir()
    found = []
    for path in paths:
        if not path.is_file() or not is_nifti(path):
            continue
        if _inside(path, exclude) or _hidden(path, folder):
            continue
        found.append(path)
    return sorted(found)


def _inside(path: Path, folder: Path | None) -> bool:
    return folder is not None and folder.resolve() in path.resolve().parents


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


# ------------------------------------------------------------------------------------- channels


def _nnunet_channels(image_dir: Path, root: Path) -> tuple[Path | None, dict | None]:
    """(dataset.json, its channel_names) of an nnU-Net layout beside or above ``image_dir``."""
    for folder in dict.fromkeys([image_dir, image_dir.parent, root]):
        path = folder / "dataset.json"
        if not path.is_file():
            continue
        try:
            names = json.loads(path.read_text(encoding="utf-8")).get("channel_names")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(names, dict) and names:
            return path, names
    return None, None


def _group_channels(images: list[Path], channels_on: bool, where: str) -> dict[str, list[Path]]:
    """Case id -> channel paths (one path for a single-channel case)."""
    if not channels_on:
        return _single_channel(images, where)
    grouped: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in images:
        stem = nifti_stem(path)
        match = CHANNEL.search(stem)
        base, channel = (stem[: match.start()], int(match.group(1))) if match else (stem, 0)
        if channel in grouped[base]:
            raise DataError(
                f"two scans give the case id {base!r}: {grouped[base][channel]} and {path}"
            )
        grouped[base][channel] = path
    result = {}
    for base, channels in grouped.items():
        if sorted(channels) != list(range(len(channels))):
            raise DataError(
                f"case {base!r}: channel files {sorted(channels)} are not _0000, _0001, ... in a "
                f"row; if the _NNNN suffix is part of the case name (as in amos_0001), set "
                f"{where}.options.channels: false"
            )
        result[base] = [channels[i] for i in range(len(channels))]
    return result


def _single_channel(images: list[Path], where: str) -> dict[str, list[Path]]:
    """Each file is a case; a lone ``x_0000`` (nnU-Net naming of one channel) is case ``x``."""
    stems = [nifti_stem(p) for p in images]
    bases: dict[str, list[str]] = defaultdict(list)
    for stem in stems:
        match = CHANNEL.search(stem)
        if match:
            bases[stem[: match.start()]].append(match.group(1))
    result: dict[str, list[Path]] = {}
    for path, stem in zip(images, stems, strict=True):
        case_id = stem
        if stem.endswith("_0000") and bases[stem[:-5]] == ["0000"]:
            case_id = stem[:-5]
        if case_id in result:
            raise DataError(
                f"two scans give the case id {case_id!r}: {result[case_id][0]} and {path}"
            )
        result[case_id] = [path]
    looks_like_channels = sorted(b for b, s in bases.items() if {"0000", "0001"} <= set(s))
    if looks_like_channels:
        example = looks_like_channels[0]
        logger.warning(
            "%s: %s_0000, %s_0001... are read as separate cases (%d such name group(s)); if they "
            "are channels of one case (nnU-Net naming), set %s.options.channels: true",
            where,
            example,
            example,
            len(looks_like_channels),
            where,
        )
    return result


def _check_channel_count(grouped: dict[str, list[Path]], expected: int, dataset_json: Path) -> None:
    for case_id, channels in sorted(grouped.items()):
        if len(channels) != expected:
            raise DataError(
                f"case {case_id!r}: {len(channels)} channel file(s), {dataset_json} lists "
                f"{expected} channel_names"
            )


# ---------------------------------------------------------------------------------------- labels


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


# ---------------------------------------------------------------------------------- unused files


def _report_unused(
    ctx: SourceContext,
    image_dir: Path,
    label_dir: Path | None,
    options: FolderOptions,
    used: set[Path],
) -> None:
    """One warning listing every file under the source root that no case uses, with hints."""
    roots = [ctx.root]
    if not _inside(image_dir, ctx.root) and image_dir != ctx.root:
        roots.append(image_dir)
    unused: list[Path] = []
    for root in roots:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not _hidden(path, root) and path not in used:
                unused.append(path)
    if not unused:
        return
    base = ctx.root if all(_inside(p, ctx.root) for p in unused) else None

    def shown(path: Path) -> str:
        return str(path.relative_to(base)) if base is not None else str(path)

    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in unused:
        by_folder[path.parent].append(path)
    entries: list[str] = []
    for folder, files in sorted(by_folder.items()):
        if len(files) > 3 or len(entries) + len(files) > MAX_LISTED:
            entries.append(f"{shown(folder)}/ ({len(files)} files, e.g. {files[0].name})")
        else:
            entries += [shown(p) for p in files]
    hints = _hints(unused, image_dir, label_dir, options, ctx.where)
    # a scan left out (or a hint) is worth a warning; notes, tables and sidecar files are listed
    scans_left_out = any(is_nifti(p) or _has_dicom_magic(p) for p in unused)
    logger.log(
        logging.WARNING if scans_left_out or hints else logging.INFO,
        "%s (%s): %d file(s) not used: %s%s",
        ctx.where,
        ctx.root,
        len(unused),
        ", ".join(entries),
        "".join(f"; {hint}" for hint in hints),
    )


def _hints(
    unused: list[Path],
    image_dir: Path,
    label_dir: Path | None,
    options: FolderOptions,
    where: str,
) -> list[str]:
    hints = []
    niftis = [p for p in unused if is_nifti(p)]
    label_like = sorted({p.parent for p in niftis if LABEL_FOLDER.match(p.parent.name)})
    if label_like and label_dir is None:
        hints.append(
            f"label maps in {label_like[0].name}/? give it as {where}.options.labels: "
            f"{label_like[0].name}"
        )
    if not options.recursive and any(
        _inside(p, image_dir)
        and not _inside(p, label_dir)
        and (
            (is_nifti(p) and p.parent != image_dir)
            or (len(p.relative_to(image_dir).parts) > 2 and _has_dicom_magic(p))
        )
        for p in unused
    ):
        hints.append(
            f"scans and DICOM series in nested sub-folders are read with {where}.options.recursive: true"
        )
    return hints


ADAPTER = Adapter(
    name="folder",
    options=FolderOptions,
    find=find_folder,
    description="a folder of NIfTI scans and DICOM series folders (options.images) with optional "
    "labels (options.labels)",
)
