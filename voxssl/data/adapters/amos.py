"""AMOS22: CT and MR abdomen, 15 organs.

Layout: ``imagesTr/labelsTr`` (240), ``imagesVa/labelsVa`` (120; labels in the later release),
``imagesTs`` (no labels), file names ``amos_XXXX.nii.gz`` for images and labels alike.

Modality comes from the id: labelled ids 1-500 are CT and 501-600 MR (``mr = 500 < id <= 600``);
the separately released unlabelled scans have ids >= 5000 and are CT, which a naive ``id > 500``
rule would get wrong. The recipe's ``modality`` (ct or mr) keeps only that modality.

AMOS ids map to the canonical ones: 1-9 unchanged, 10 pancreas -> 11, 11/12 adrenals -> 12/13,
13 duodenum -> 14, 14 bladder -> 15, 15 prostate/uterus -> 16.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from voxssl.data.adapters.base import Adapter, SourceContext, nifti_files, nifti_stem, walk_dirs
from voxssl.data.case import Case, Modality

AMOS_TO_CANONICAL: dict[int, int] = {
    **{i: i for i in range(1, 10)},
    10: 11,
    11: 12,
    12: 13,
    13: 14,
    14: 15,
    15: 16,
}
SPLIT_DIRS = {
    "train": ("imagesTr", "labelsTr"),
    "validation": ("imagesVa", "labelsVa"),
    "test": ("imagesTs", None),
}
CASE_NAME = re.compile(r"^amos_(\d+)$")


@dataclass
class AMOSOptions:
    splits: list[Literal["train", "validation", "test"]] = field(
        default_factory=lambda: ["train", "validation", "test"]
    )


def amos_modality(amos_id: int) -> Modality:
    """MR for ids 501-600, CT otherwise (1-500 and the unlabelled >= 5000 release)."""
    return "mr" if 500 < amos_id <= 600 else "ct"


def find_amos(ctx: SourceContext, options: AMOSOptions) -> list[Case]:
    cases = []
    folders: dict[str, Path] = {}
    for folder in sorted(walk_dirs(ctx.root, max_depth=3), key=lambda p: (len(p.parts), str(p))):
        folders.setdefault(folder.name, folder)  # the shallowest imagesTr wins
    for split in options.splits:
        image_dir_name, label_dir_name = SPLIT_DIRS[split]
        image_dir = folders.get(image_dir_name)
        if image_dir is None:
            continue
        label_dir = image_dir.parent / label_dir_name if label_dir_name else None
        for image in nifti_files(image_dir):
            match = CASE_NAME.match(nifti_stem(image))
            if match is None:
                continue
            modality = amos_modality(int(match.group(1)))
            if ctx.modality is not None and modality != ctx.modality:
                continue
            label = label_dir / image.name if label_dir is not None else None
            has_label = label is not None and label.is_file()
            cases.append(
                Case(
                    case_id=nifti_stem(image),
                    image=image,
                    modality=modality,
                    label=label if has_label else None,
                    label_map=dict(AMOS_TO_CANONICAL) if has_label else None,
                    metadata={"split": split, "dataset": "amos", "amos_id": int(match.group(1))},
                )
            )
    return cases


ADAPTER = Adapter(
    name="amos",
    options=AMOSOptions,
    find=find_amos,
    description="AMOS22 CT+MR (imagesTr/labelsTr, imagesVa/labelsVa, imagesTs)",
)
