"""A case: one scan (and maybe its label) as found by a dataset adapter, before preprocessing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voxssl.config.data import Modality


@dataclass(frozen=True)
class Case:
    """One scan of a data set.

    Attributes:
        case_id: unique within its source; used as the cache file name.
        image: a NIfTI file or a DICOM series folder. Multi-channel scans (e.g. 4 Dixon contrasts)
            list every channel in ``channels`` instead and leave ``image`` as the first channel.
        modality: ``ct`` or ``mr``.
        label: a NIfTI label map on the image grid, a folder of PNG slices (CHAOS), or None.
        label_format: how to read ``label``: ``nifti`` or ``chaos_png``.
        label_map: source label id -> canonical id (:mod:`voxssl.vocabulary`); ids not in the
            map become background. None means the ids are canonical already.
        annotated: canonical ids that this case's label actually annotates. None means every class
            of the data set (a full label); a partial label (FLARE23) lists the ones it has, and an
            absent class must not be trained as background.
        channels: every channel's path for multi-channel scans, in a fixed contrast order.
        metadata: anything else the adapter knows (subject, contrast, split, phase ...).
    """

    case_id: str
    image: Path
    modality: Modality
    label: Path | None = None
    label_format: Literal["nifti", "chaos_png"] = "nifti"
    label_map: dict[int, int] | None = None
    annotated: tuple[int, ...] | None = None
    channels: tuple[Path, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def has_label(self) -> bool:
        return self.label is not None
