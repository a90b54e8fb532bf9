"""Medical Segmentation Decathlon tasks (``TaskXX_Name/dataset.json``).

``dataset.json`` lists ``training`` pairs and ``test`` images with ``./``-relative paths and
labels as ``id -> name``. Names map to the canonical vocabulary (``spleen``, ``liver``,
``pancreas`` ...); a name that matches nothing (``cancer``, ``hepatic vessel``) stops with an error
that names it, unless ``label_map`` gives it (``{2: liver}`` folds the liver tumour into the liver,
``{2: ignore}`` leaves it unknown) or ``unknown_labels`` says ``background`` or ``ignore``.

Modality: CT when every entry of ``modality`` is CT, MR otherwise; the recipe's ``modality``
overrides. Multi-modal tasks (BrainTumour, Prostate) ship 4D NIfTI: the case's ``image`` is that
4D file and ``metadata["channel_names"]`` lists the modalities in file order.
macOS ``._*`` resource-fork files from the tarballs are skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxssl.data.adapters.base import (
    Adapter,
    SourceContext,
    UnknownLabelPolicy,
    is_junk,
    label_map_from_names,
    nifti_stem,
    parse_label_map,
)
from voxssl.data.case import Case, Modality
from voxssl.errors import DataError


@dataclass
class MSDOptions:
    label_map: dict[int | str, int | str] | None = None  # source id -> organ/background/ignore
    unknown_labels: UnknownLabelPolicy = "error"
    include_test: bool = True
    dataset_json: str = "dataset.json"


def read_dataset_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: dataset.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def modality_of_names(names: list[str]) -> Modality:
    """CT when every channel is CT, MR otherwise (MRI, T2, ADC, FLAIR ...)."""
    return "ct" if names and all(str(n).strip().upper() == "CT" for n in names) else "mr"


def find_msd(ctx: SourceContext, options: MSDOptions) -> list[Case]:
    json_path = ctx.root / options.dataset_json
    data = read_dataset_json(json_path)
    try:
        names = {int(k): str(v) for k, v in data.get("labels", {}).items()}
    except (TypeError, ValueError, AttributeError):
        raise DataError(
            f"{json_path}: 'labels' must map integer ids to names (MSD format)"
        ) from None
    explicit = parse_label_map(options.label_map, f"{ctx.where}.options.label_map")
    label_map = label_map_from_names(
        names, explicit, options.unknown_labels, where=ctx.where, dataset_file=json_path
    )
    channel_names = [
        str(v) for _, v in sorted(data.get("modality", {}).items(), key=lambda kv: int(kv[0]))
    ]
    modality = ctx.modality or modality_of_names(channel_names)
    metadata: dict[str, Any] = {"dataset": str(data.get("name", ctx.root.name))}
    if len(channel_names) > 1:
        metadata["channel_names"] = channel_names
    cases = []
    for entry in data.get("training", []):
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(
                f"{json_path}: every 'training' entry needs 'image' and 'label', got {entry!r}"
            )
        image = _existing(ctx.root, entry["image"], json_path)
        label = _existing(ctx.root, entry["label"], json_path) if entry.get("label") else None
        if image is None:
            continue
        cases.append(
            Case(
                nifti_stem(image),
                image,
                modality,
                label=label,
                label_map=label_map if label is not None else None,
                metadata={**metadata, "split": "train"},
            )
        )
    if options.include_test:
        for entry in data.get("test", []):
            path = entry.get("image") if isinstance(entry, dict) else entry
            image = _existing(ctx.root, path, json_path)
            if image is not None:
                cases.append(
                    Case(nifti_stem(image), image, modality, metadata={**metadata, "split": "test"})
                )
    return cases


def _existing(root: Path, relative: object, json_path: Path) -> Path | None:
    """The file a dataset.json entry names; None for macOS junk; an error when it is missing."""
    path = root / str(relative)
    if is_junk(path):
        return None
    path = Path(*[part for part in path.parts if part != "."])
    if not path.is_file():
        raise DataError(f"{json_path}: lists {relative!r} but {path} does not exist")
    return path


ADAPTER = Adapter(
    name="msd",
    options=MSDOptions,
    find=find_msd,
    description="Medical Segmentation Decathlon task (dataset.json with imagesTr/labelsTr/imagesTs)",
)
