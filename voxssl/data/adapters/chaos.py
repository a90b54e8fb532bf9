"""CHAOS (Combined Healthy Abdominal Organ Segmentation): CT liver and MR abdomen, DICOM + PNG.

Found anywhere under the root (``CHAOS_Train_Sets/Train_Sets``, ``Test_Sets``)::

    CT/<pid>/DICOM_anon/*.dcm             + CT/<pid>/Ground/liver_GT_XXX.png
    MR/<pid>/T2SPIR/DICOM_anon/*.dcm      + MR/<pid>/T2SPIR/Ground/*.png
    MR/<pid>/T1DUAL/DICOM_anon/InPhase    + MR/<pid>/T1DUAL/Ground/*.png (InPhase numbering)
    MR/<pid>/T1DUAL/DICOM_anon/OutPhase     (same Ground, matched through InPhase by position)

A case's ``image`` is the DICOM folder, its ``label`` the Ground folder with
``label_format="chaos_png"``; :func:`voxssl.data.chaos_png.read_case_label` builds the 3D label.
Label ids are canonical after decoding (CT liver -> 6; MR liver/kidneys/spleen -> 6/2/3/1).

Case ids: ``ct_01``, ``mr_01_t2spir``, ``mr_01_t1in``, ``mr_01_t1out``; test-set cases start with
``test_``. The recipe's ``modality`` keeps one modality; ``sequences`` picks the MR series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voxssl.config.data import Modality
from voxssl.data.adapters.base import Adapter, SourceContext, walk_dirs
from voxssl.data.case import Case

#: metadata key: the DICOM folder whose file names the Ground PNGs follow (T1DUAL OutPhase -> InPhase).
LABEL_DICOM_DIR = "label_dicom_dir"

MRSequence = Literal["t2spir", "t1in", "t1out"]
#: sequence -> (folder under MR/<pid>, DICOM sub-folder, the DICOM folder that names the Ground PNGs)
MR_SEQUENCES: dict[str, tuple[str, str, str]] = {
    "t2spir": ("T2SPIR", "DICOM_anon", "DICOM_anon"),
    "t1in": ("T1DUAL", "DICOM_anon/InPhase", "DICOM_anon/InPhase"),
    "t1out": ("T1DUAL", "DICOM_anon/OutPhase", "DICOM_anon/InPhase"),
}


@dataclass
class CHAOSOptions:
    sequences: list[MRSequence] = field(default_factory=lambda: ["t2spir", "t1in", "t1out"])


def find_chaos(ctx: SourceContext, options: CHAOSOptions) -> list[Case]:
    cases = []
    for folder in walk_dirs(ctx.root, max_depth=4):
        if folder.name == "CT" and ctx.modality in (None, "ct"):
            cases.extend(_ct_cases(folder))
        elif folder.name == "MR" and ctx.modality in (None, "mr"):
            cases.extend(_mr_cases(folder, options.sequences))
    return cases


def _patients(modality_dir: Path) -> list[Path]:
    return sorted(
        (p for p in modality_dir.iterdir() if p.is_dir() and p.name.isdigit()),
        key=lambda p: int(p.name),
    )


def _prefix(modality_dir: Path) -> str:
    """Test-set cases (``Test_Sets/CT/3``) get ``test_`` so they never collide with training ids."""
    return "test_" if "test_set" in modality_dir.parent.name.lower() else ""


def _ct_cases(ct_dir: Path) -> list[Case]:
    cases = []
    for patient in _patients(ct_dir):
        dicom = patient / "DICOM_anon"
        if not dicom.is_dir():
            continue
        ground = patient / "Ground"
        cases.append(
            _case(
                f"{_prefix(ct_dir)}ct_{int(patient.name):02d}",
                dicom,
                "ct",
                ground,
                dicom,
                patient,
                "ct",
            )
        )
    return cases


def _mr_cases(mr_dir: Path, sequences: list[MRSequence]) -> list[Case]:
    cases = []
    for patient in _patients(mr_dir):
        for sequence in sequences:
            series_dir, dicom_sub, label_dicom_sub = MR_SEQUENCES[sequence]
            dicom = patient / series_dir / dicom_sub
            if not dicom.is_dir():
                continue
            ground = patient / series_dir / "Ground"
            case_id = f"{_prefix(mr_dir)}mr_{int(patient.name):02d}_{sequence}"
            cases.append(
                _case(
                    case_id,
                    dicom,
                    "mr",
                    ground,
                    patient / series_dir / label_dicom_sub,
                    patient,
                    sequence,
                )
            )
    return cases


def _case(
    case_id: str,
    dicom: Path,
    modality: Modality,
    ground: Path,
    label_dicom: Path,
    patient: Path,
    sequence: str,
) -> Case:
    has_label = ground.is_dir() and any(p.suffix.lower() == ".png" for p in ground.iterdir())
    metadata: dict[str, Any] = {"dataset": "chaos", "patient": patient.name, "sequence": sequence}
    if has_label:
        metadata[LABEL_DICOM_DIR] = label_dicom
    return Case(
        case_id=case_id,
        image=dicom,
        modality=modality,
        label=ground if has_label else None,
        label_format="chaos_png" if has_label else "nifti",
        metadata=metadata,
    )


ADAPTER = Adapter(
    name="chaos",
    options=CHAOSOptions,
    find=find_chaos,
    description="CHAOS CT/MR DICOM series with Ground PNG labels",
)
