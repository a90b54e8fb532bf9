"""What every dataset adapter shares: the adapter record, file discovery, label maps, checks.

An adapter turns a folder laid out the way a data set ships into a list of
:class:`~voxssl.data.case.Case`. It never reads voxels (finding 4000 FLARE cases must take
seconds), with one exception that an option asks for explicitly.

Partial labels (FLARE23): an adapter cannot know which classes a partial label annotates without
reading it, so it leaves ``Case.annotated`` as None and sets ``metadata["partial_labels"] = True``.
Preprocessing, which reads the label anyway, calls :func:`annotated_classes_from_label` with the ids
found in the file and stores the answer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from voxssl.data.adapters.organ_names import canonical_id_of_name
from voxssl.data.case import Case, Modality
from voxssl.errors import ConfigError, DataError
from voxssl.vocabulary import BACKGROUND, IGNORE_INDEX, is_known

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: nnU-Net style channel suffix: ``case_0000.nii.gz``.
CHANNEL_SUFFIX = re.compile(r"_(\d{4})$")

#: ``metadata`` key an adapter sets on cases whose label annotates only some classes.
PARTIAL_LABELS = "partial_labels"

UnknownLabelPolicy = Literal["error", "background", "ignore"]


@dataclass(frozen=True)
class SourceContext:
    """What an adapter knows about the recipe entry it serves (for filters and error messages)."""

    root: Path
    modality: Modality | None  # the recipe's ``modality`` for this source, or None
    where: str  # e.g. ``data.sources.0``: prefix of every recipe key named in an error


@dataclass(frozen=True)
class Adapter:
    """A registered adapter: a typed options schema and a function that finds the cases."""

    name: str
    options: type  # dataclass; keys under ``options:`` in the recipe are validated against it
    find: Callable[[SourceContext, Any], list[Case]]
    description: str = ""


# --------------------------------------------------------------------------------------------- files


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES) and not is_junk(path)


def is_junk(path: Path) -> bool:
    """macOS resource forks (``._x.nii.gz``, shipped inside the MSD tarballs) and hidden files."""
    return path.name.startswith(".")


def nifti_stem(path: Path | str) -> str:
    """``img0001.nii.gz`` -> ``img0001``."""
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def split_channel(stem: str) -> tuple[str, int | None]:
    """``case_0001_0000`` -> (``case_0001``, 0); a stem without a channel suffix -> (stem, None)."""
    match = CHANNEL_SUFFIX.search(stem)
    if match is None:
        return stem, None
    return stem[: match.start()], int(match.group(1))


def nifti_files(folder: Path) -> list[Path]:
    """The NIfTI files directly in ``folder``, sorted by name, without hidden/macOS junk files."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} not found: {path}")
    return path


def walk_dirs(root: Path, max_depth: int = 6) -> list[Path]:
    """Every folder under ``root`` (``root`` included) up to ``max_depth`` levels, sorted."""
    found = [root]
    frontier = [root]
    for _ in range(max_depth):
        children: list[Path] = []
        for folder in frontier:
            try:
                children.extend(p for p in folder.iterdir() if p.is_dir() and not is_junk(p))
            except PermissionError:
                logger.warning("cannot list %s (permission denied); skipped", folder)
        frontier = children
        found.extend(children)
    return sorted(found)


def resolve_under(root: Path, path: Path | str) -> Path:
    """A path from the options, relative to the source root unless absolute."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else root / path


# ---------------------------------------------------------------------------------------- modality


def check_fixed_modality(ctx: SourceContext, modality: str, adapter: str) -> None:
    """Adapters of single-modality data sets reject a contradicting ``modality`` in the recipe."""
    if ctx.modality is not None and ctx.modality != modality:
        raise ConfigError(
            f"{ctx.where}.modality: the {adapter} data set is {modality.upper()}, got {ctx.modality!r}"
        )


def require_modality(ctx: SourceContext, adapter: str) -> Modality:
    if ctx.modality is None:
        raise ConfigError(f"{ctx.where}.modality: the {adapter} adapter needs it (ct or mr)")
    return ctx.modality


# -------------------------------------------------------------------------------------- label maps


def canonical_target(value: int | str, key: str) -> int:
    """A label-map target: a canonical organ name or id, ``background`` (0) or ``ignore`` (255)."""

    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected an organ name or id, got {value!r}")
    if isinstance(value, int):
        if value == IGNORE_INDEX or is_known(value):
            return value
        raise ConfigError(f"{key}: {value} is not a canonical organ id (see voxssl.vocabulary)")
    text = str(value).strip().lower()
    if text == "background":
        return BACKGROUND
    if text == "ignore":
        return IGNORE_INDEX
    found = canonical_id_of_name(text)
    if found is None:
        raise ConfigError(
            f"{key}: unknown organ {value!r} (use a name from voxssl.vocabulary, "
            f"'background' or 'ignore')"
        )
    return found


def parse_label_map(raw: dict[Any, Any] | None, key: str) -> dict[int, int]:
    """Validate a recipe ``label_map`` option: source id -> organ name/id/background/ignore."""
    if raw is None:
        return {}
    result = {}
    for source_id, target in raw.items():
        try:
            sid = int(source_id)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}.{source_id}: the keys must be label ids (integers)") from None
        result[sid] = canonical_target(target, f"{key}.{source_id}")
    return result


def label_map_from_names(
    names: dict[int, str],
    explicit: dict[int, int],
    unknown: UnknownLabelPolicy,
    *,
    where: str,
    dataset_file: Path,
) -> dict[int, int]:
    """Map a data set's ``id -> name`` labels to canonical ids by name.

    ``explicit`` entries (from the recipe's ``label_map`` option) win; the remaining names are
    matched against the vocabulary and its synonyms (``arota``, ``postcava``, ``kidney_left`` ...).
    A name that matches nothing is an error naming the file and the option to fix it, or becomes
    background / ignore (255) when ``unknown_labels`` says so.
    """

    mapping: dict[int, int] = {}
    unmatched = []
    for source_id, name in sorted(names.items()):
        if source_id == BACKGROUND:
            continue
        if source_id in explicit:
            mapping[source_id] = explicit[source_id]
            continue
        found = canonical_id_of_name(name)
        if found is None:
            unmatched.append(f"{source_id} ({name})")
            if unknown != "error":
                mapping[source_id] = BACKGROUND if unknown == "background" else IGNORE_INDEX
        else:
            mapping[source_id] = found
    for source_id, target in explicit.items():
        mapping.setdefault(source_id, target)
    if unmatched and unknown == "error":
        raise DataError(
            f"{dataset_file}: labels {', '.join(unmatched)} match no organ of the voxssl vocabulary; "
            f"give them in {where}.options.label_map (id: organ name, 'background' or 'ignore') or set "
            f"{where}.options.unknown_labels to 'background' or 'ignore'"
        )
    if unmatched:
        logger.warning("%s: labels %s mapped to %s", dataset_file, ", ".join(unmatched), unknown)
    return mapping


def annotated_classes_from_label(
    canonical_ids_present: Iterable[int], case: Case
) -> tuple[int, ...] | None:
    """The canonical classes that ``case``'s label annotates, for the cache's ``annotated`` entry.

    Args:
        canonical_ids_present: the ids present in the label AFTER ``case.label_map`` was applied
            (canonical ids, e.g. ``np.unique(mapped_label)``); 0 and 255 are ignored.
        case: the case the label belongs to.

    Returns:
        ``case.annotated`` when the adapter set it; for a case marked
        ``metadata["partial_labels"]`` the sorted canonical ids present; otherwise None, meaning a
        full label (a class of the data set that is absent is truly absent).
    """
    if case.annotated is not None:
        return tuple(case.annotated)
    if not case.metadata.get(PARTIAL_LABELS, False):
        return None
    return tuple(sorted({int(i) for i in canonical_ids_present} - {BACKGROUND, IGNORE_INDEX}))


def check_unique_ids(cases: list[Case], root: Path) -> None:
    seen: dict[str, Case] = {}
    for case in cases:
        if case.case_id in seen:
            raise DataError(
                f"{root}: two scans give the same case id {case.case_id!r}: "
                f"{seen[case.case_id].image} and {case.image}"
            )
        seen[case.case_id] = case
