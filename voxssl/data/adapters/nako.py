"""NAKO (German National Cohort) Dixon MRI, as the user holds it: NIfTI files plus a manifest.

NAKO has no public file layout, so a manifest says which file is which. It is a CSV with a header
or a YAML list of mappings, with the columns ``subject``, ``contrast``, ``path`` (relative to the
root, or absolute). One row per subject and contrast::

    subject,contrast,path
    100001,water,100001/water.nii.gz
    100001,fat,100001/fat.nii.gz
    100001,in,100001/in.nii.gz
    100001,opp,100001/opp.nii.gz

Each subject becomes one multi-channel MR case with ``channels`` in the order of the
``contrasts`` option (default water, fat, in, opp; any names the manifest uses). A row whose
contrast is ``label`` gives that subject's label map (canonical ids, or ``label_map``). A subject
missing a contrast is an error, or skipped with a warning when ``missing: skip``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from voxssl.data.adapters.base import (
    Adapter,
    SourceContext,
    check_fixed_modality,
    parse_label_map,
    resolve_under,
)
from voxssl.data.case import Case
from voxssl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MANIFEST_NAMES = ("manifest.csv", "manifest.yaml", "manifest.yml")
COLUMNS = ("subject", "contrast", "path")
LABEL_CONTRAST = "label"


@dataclass
class NAKOOptions:
    manifest: str | None = None  # default: manifest.csv / .yaml / .yml in the root
    contrasts: list[str] = field(default_factory=lambda: ["water", "fat", "in", "opp"])
    missing: Literal["error", "skip"] = "error"
    label_map: dict[int | str, int | str] | None = None


def find_nako(ctx: SourceContext, options: NAKOOptions) -> list[Case]:
    check_fixed_modality(ctx, "mr", "nako")
    if not options.contrasts or len(set(options.contrasts)) != len(options.contrasts):
        raise ConfigError(
            f"{ctx.where}.options.contrasts: must list distinct contrast names, got {options.contrasts}"
        )
    manifest = _manifest_path(ctx, options)
    label_map = parse_label_map(options.label_map, f"{ctx.where}.options.label_map") or None
    subjects: dict[str, dict[str, Path]] = {}
    for line, row in _read_rows(manifest):
        subject, contrast = row["subject"], row["contrast"]
        path = resolve_under(ctx.root, row["path"])
        if contrast not in options.contrasts and contrast != LABEL_CONTRAST:
            logger.debug(
                "%s line %d: contrast %r not in options.contrasts; skipped",
                manifest,
                line,
                contrast,
            )
            continue
        if not path.is_file():
            raise DataError(f"{manifest} line {line}: file not found: {path}")
        files = subjects.setdefault(subject, {})
        if contrast in files:
            raise DataError(
                f"{manifest} line {line}: subject {subject!r} lists contrast {contrast!r} twice"
            )
        files[contrast] = path
    cases = []
    for subject, files in subjects.items():
        absent = [c for c in options.contrasts if c not in files]
        if absent:
            message = f"{manifest}: subject {subject!r} lacks contrast(s) {', '.join(absent)}"
            if options.missing == "error":
                raise DataError(
                    message + f" (set {ctx.where}.options.missing: skip to leave it out)"
                )
            logger.warning("%s; skipped", message)
            continue
        channels = tuple(files[c] for c in options.contrasts)
        label = files.get(LABEL_CONTRAST)
        cases.append(
            Case(
                case_id=subject,
                image=channels[0],
                modality="mr",
                label=label,
                label_map=label_map if label is not None else None,
                channels=channels if len(channels) > 1 else (),
                metadata={
                    "dataset": "nako",
                    "subject": subject,
                    "contrasts": list(options.contrasts),
                },
            )
        )
    return cases


def _manifest_path(ctx: SourceContext, options: NAKOOptions) -> Path:
    if options.manifest is not None:
        path = resolve_under(ctx.root, options.manifest)
        if not path.is_file():
            raise DataError(f"{ctx.where}.options.manifest: file not found: {path}")
        return path
    for name in MANIFEST_NAMES:
        if (ctx.root / name).is_file():
            return ctx.root / name
    raise DataError(
        f"{ctx.root}: no manifest ({' / '.join(MANIFEST_NAMES)}); give {ctx.where}.options.manifest"
    )


def _read_rows(manifest: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) pairs with the three columns, validated."""
    try:
        if manifest.suffix.lower() == ".csv":
            with manifest.open(newline="", encoding="utf-8") as handle:
                rows = [(i + 2, row) for i, row in enumerate(csv.DictReader(handle))]
        else:
            data = yaml.safe_load(manifest.read_text(encoding="utf-8"))
            if not isinstance(data, list):
                raise DataError(
                    f"{manifest}: expected a YAML list of {{subject, contrast, path}} mappings"
                )
            rows = [(i + 1, row) for i, row in enumerate(data)]
    except (OSError, UnicodeDecodeError, csv.Error, yaml.YAMLError) as err:
        raise DataError(f"{manifest}: cannot read the manifest: {err}") from None
    result = []
    for line, row in rows:
        if not isinstance(row, dict) or any(row.get(col) in (None, "") for col in COLUMNS):
            raise DataError(
                f"{manifest} entry {line}: needs the columns {', '.join(COLUMNS)}, got {row!r}"
            )
        result.append((line, {col: str(row[col]).strip() for col in COLUMNS}))
    if not result:
        raise DataError(f"{manifest}: the manifest lists no files")
    return result


ADAPTER = Adapter(
    name="nako",
    options=NAKOOptions,
    find=find_nako,
    description="NAKO Dixon MRI: NIfTI files listed in a manifest (subject, contrast, path)",
)
