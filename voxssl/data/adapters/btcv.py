"""BTCV (Synapse Multi-Atlas Abdomen): CT, 13 organs whose ids are the canonical ones.

Two layouts are found anywhere under the root (extra nesting such as
``Abdomen/RawData/RawData/`` is fine):

- the Synapse zip: ``Training/img/img0001.nii.gz`` + ``Training/label/label0001.nii.gz``,
  ``Testing/img/`` without labels;
- the MONAI/SwinUNETR renaming: ``imagesTr/img0001.nii.gz`` + ``labelsTr/label0001.nii.gz``,
  ``imagesTs/``.

The case id is the image stem (``img0001``); the same scan found twice is an error. With the MONAI
layout, scans listed under ``validation`` in ``dataset_0.json`` get ``metadata["split"] =
"validation"`` (0035-0040 in the SwinUNETR split); the others keep ``train``/``test``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from voxssl.data.adapters.base import (
    Adapter,
    SourceContext,
    check_fixed_modality,
    nifti_files,
    nifti_stem,
    walk_dirs,
)
from voxssl.data.case import Case
from voxssl.errors import DataError

#: image folder name -> (label folder name, split)
IMAGE_DIRS = {
    "img": ("label", None),  # split from the parent: Training / Testing
    "imagesTr": ("labelsTr", "train"),
    "imagesTs": ("labelsTs", "test"),
    "imagesVa": ("labelsVa", "validation"),
}
IMAGE_NAME = re.compile(r"^img(\d+)$")


@dataclass
class BTCVOptions:
    include_test: bool = True  # the unlabelled Testing/imagesTs scans (useful for pretraining)


def find_btcv(ctx: SourceContext, options: BTCVOptions) -> list[Case]:
    check_fixed_modality(ctx, "ct", "btcv")
    cases = []
    for folder in walk_dirs(ctx.root):
        if folder.name not in IMAGE_DIRS:
            continue
        label_dir_name, split = IMAGE_DIRS[folder.name]
        split = split or _split_of(folder.parent.name)
        if split == "test" and not options.include_test:
            continue
        label_dir = folder.parent / label_dir_name
        validation = _monai_validation_names(folder.parent) if split == "train" else set()
        for image in nifti_files(folder):
            match = IMAGE_NAME.match(nifti_stem(image))
            if match is None:
                continue
            label = label_dir / f"label{match.group(1)}{image.name[len(nifti_stem(image)) :]}"
            cases.append(
                Case(
                    case_id=nifti_stem(image),
                    image=image,
                    modality="ct",
                    label=label if label.is_file() else None,
                    metadata={
                        "split": "validation" if image.name in validation else split,
                        "dataset": "btcv",
                    },
                )
            )
    return cases


def _monai_validation_names(folder: Path) -> set[str]:
    """Image names in the ``validation`` list of the MONAI/SwinUNETR ``dataset_0.json``, if present."""
    path = folder / "dataset_0.json"
    if not path.is_file():
        return set()
    try:
        entries = json.loads(path.read_text(encoding="utf-8")).get("validation", [])
        return {Path(entry["image"]).name for entry in entries}
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, KeyError, TypeError) as err:
        raise DataError(
            f"{path}: not the MONAI BTCV split file ({type(err).__name__}: {err})"
        ) from None


def _split_of(parent_name: str) -> str:
    name = parent_name.lower()
    if name.startswith("train"):
        return "train"
    if name.startswith("test"):
        return "test"
    return name


ADAPTER = Adapter(
    name="btcv",
    options=BTCVOptions,
    find=find_btcv,
    description="BTCV abdomen CT (RawData/Training/img|label or imagesTr/labelsTr)",
)
