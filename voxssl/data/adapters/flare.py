"""FLARE22 and FLARE23 abdominal CT (MICCAI FLARE challenges).

Every folder of NIfTI images under the root is found; a label folder is its sibling named
``labels*`` (``images`` -> ``labels``, ``imagesTr2200`` -> ``labelsTr2200``) and labels match
images by name without the ``_0000`` channel suffix. The split comes from the path:

========================================  ==============  ===========================
folder                                    split           labels
========================================  ==============  ===========================
FLARE22_LabeledCase50/images (+labels)    train           full, 13 organs
FLARE22_UnlabeledCase1-1000, 1001-2000    unlabelled      none
Tuning/images (+labels)                   tuning          full; ids ``tuning_<stem>``
Testing/                                  test            none
imagesTr2200 (+labelsTr2200)              train           partial (FLARE23)
unlabeledTr1800                           unlabelled      none (no ``_0000`` suffix)
validation/                               validation      labels if a labels sibling
========================================  ==============  ===========================

Tuning cases get the prefix ``tuning_`` because FLARE22 names both the tuning and the test scans
``FLARETs_XXXX``.

Labels map to the canonical ids (1 liver -> 6, 3 spleen -> 1, 12 duodenum -> 14 ...). FLARE23's
tumour (14) is not in the vocabulary; by default it becomes ``ignore`` (255) rather than
background, because tumours sit inside organs whose masks exclude them: calling them background
would teach the model that part of a liver is not liver. ``tumor: background`` changes that.

FLARE23's 2200 training labels are partial. The adapter marks them
``metadata["partial_labels"] = True`` and leaves ``annotated`` to preprocessing
(:func:`voxssl.data.adapters.base.annotated_classes_from_label`), which reads the label anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from voxssl.data.adapters.base import (
    PARTIAL_LABELS,
    Adapter,
    SourceContext,
    check_fixed_modality,
    nifti_files,
    nifti_stem,
    walk_dirs,
)
from voxssl.data.case import Case
from voxssl.vocabulary import BACKGROUND, IGNORE_INDEX

FLARE_TO_CANONICAL: dict[int, int] = {
    1: 6,  # liver
    2: 2,  # right kidney
    3: 1,  # spleen
    4: 11,  # pancreas
    5: 8,  # aorta
    6: 9,  # inferior vena cava
    7: 12,  # right adrenal gland
    8: 13,  # left adrenal gland
    9: 4,  # gallbladder
    10: 5,  # esophagus
    11: 7,  # stomach
    12: 14,  # duodenum
    13: 3,  # left kidney
}
FLARE_TUMOR = 14
Split = Literal["train", "tuning", "validation", "test", "unlabelled"]


@dataclass
class FLAREOptions:
    splits: list[Split] | None = None  # None: every split found
    tumor: Literal["ignore", "background"] = "ignore"  # FLARE23 label 14
    partial_labels: bool | None = None  # None: FLARE23 labels are partial, FLARE22 full


def find_flare(ctx: SourceContext, options: FLAREOptions) -> list[Case]:
    check_fixed_modality(ctx, "ct", "flare")
    label_map = dict(FLARE_TO_CANONICAL)
    label_map[FLARE_TUMOR] = IGNORE_INDEX if options.tumor == "ignore" else BACKGROUND
    cases = []
    for folder in walk_dirs(ctx.root):
        if _is_label_dir(folder.name):
            continue
        images = nifti_files(folder)
        if not images:
            continue
        split = _split_of(folder.relative_to(ctx.root))
        if options.splits is not None and split not in options.splits:
            continue
        label_dir = None if split == "unlabelled" else _label_dir_of(folder)
        for image in images:
            cases.append(_case(image, split, label_dir, label_map, options))
    return cases


def _case(
    image: Path,
    split: str,
    label_dir: Path | None,
    label_map: dict[int, int],
    options: FLAREOptions,
) -> Case:
    stem = strip_channel_zero(nifti_stem(image))
    label = None
    if label_dir is not None:
        candidates = [label_dir / f"{stem}{suffix}" for suffix in (".nii.gz", ".nii")]
        label = next((c for c in candidates if c.is_file()), None)
    partial = options.partial_labels
    if partial is None:
        partial = stem.upper().startswith("FLARE23") or "2200" in image.parent.name
    metadata: dict[str, Any] = {"split": split, "dataset": "flare"}
    if label is not None and partial:
        metadata[PARTIAL_LABELS] = True
    return Case(
        case_id=f"tuning_{stem}" if split == "tuning" else stem,
        image=image,
        modality="ct",
        label=label,
        label_map=label_map if label is not None else None,
        metadata=metadata,
    )


def strip_channel_zero(stem: str) -> str:
    """``FLARE22_Tr_0001_0000`` -> ``FLARE22_Tr_0001``; FLARE23 unlabelled stems have no suffix."""
    return stem[: -len("_0000")] if stem.endswith("_0000") else stem


def _is_label_dir(name: str) -> bool:
    lower = name.lower()
    return lower.startswith("label") or lower.endswith("mask") or lower.endswith("masks")


def _label_dir_of(image_dir: Path) -> Path | None:
    name = image_dir.name
    for old, new in (("images", "labels"), ("Images", "Labels"), ("Img", "Mask"), ("img", "label")):
        if old in name:
            candidate = image_dir.parent / name.replace(old, new, 1)
            if candidate.is_dir():
                return candidate
    return None


def _split_of(relative: Path) -> str:
    text = "/".join(relative.parts).lower()
    if "unlabel" in text:
        return "unlabelled"
    if "tuning" in text:
        return "tuning"
    if "validation" in text:
        return "validation"
    if "test" in text:
        return "test"
    return "train"


ADAPTER = Adapter(
    name="flare",
    options=FLAREOptions,
    find=find_flare,
    description="FLARE22 / FLARE23 abdominal CT (labelled, partial and unlabelled folders)",
)
