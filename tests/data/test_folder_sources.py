"""The ``folder`` adapter as a new user points it at real-world folders: DICOM series in sub-folders,
files it does not use, label maps and an MR among CT images, and ``_NNNN`` names that are (nnU-Net)
or are not (AMOS) channel suffixes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from voxssl.config.data import SourceConfig
from voxssl.data.adapters import find_cases
from voxssl.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
SPACING = (4.0, 4.0, 8.0)


def ct_volume(shape=(24, 20, 6), seed=0) -> np.ndarray:
    """int16 HU: air around a soft-tissue body with a brighter 'organ' and noise."""
    rng = np.random.default_rng(seed)
    ct = np.full(shape, -1000, dtype=np.int16)
    ct[4:20, 4:16] = 40
    ct[8:12, 8:12] = 120
    return (ct + rng.integers(-20, 20, size=shape)).astype(np.int16)


def organ_label(shape=(24, 20, 6)) -> np.ndarray:
    label = np.zeros(shape, dtype=np.uint8)
    label[8:12, 8:12, 1:5] = 6  # liver
    label[14:18, 8:12, 1:5] = 1  # spleen
    return label


def write_nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([*SPACING, 1.0])), str(path))
    return path


def write_dicom_series(folder: Path, volume: np.ndarray, modality: str = "CT") -> Path:
    """One DICOM file per slice (SimpleITK's writer), placed by ImagePositionPatient."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")  # the file names have no suffix to tell SimpleITK
    writer.KeepOriginalImageUIDOn()
    for z in range(volume.shape[2]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume[:, :, z].T.astype(np.int16)))
        image.SetSpacing(SPACING[:2])
        for tag, value in [
            ("0008|0060", modality),
            ("0020|0032", f"0\\0\\{SPACING[2] * z:.3f}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0028|0030", f"{SPACING[1]}\\{SPACING[0]}"),
            ("0020|0013", str(z + 1)),
        ]:
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{z:04d}"))  # no suffix, as scanners write them
        writer.Execute(image)
    return folder


def source(root: Path, **options) -> SourceConfig:
    return SourceConfig(adapter="folder", root=root, modality="ct", options=options)


def unused_warning(caplog, level: str = "WARNING") -> str:
    found = [r for r in caplog.records if "not used" in r.getMessage()]
    assert len(found) == 1, [r.getMessage() for r in caplog.records]
    assert found[0].levelname == level
    return found[0].getMessage()


def test_unused_notes_are_information_not_a_warning(tmp_path, caplog):
    write_nifti(tmp_path / "a.nii.gz", ct_volume())
    (tmp_path / "notes.txt").write_text("scanned 2024\n", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="voxssl.data.adapters.folder"):
        find_cases(source(tmp_path))
    assert "notes.txt" in unused_warning(caplog, level="INFO")


def test_dicom_series_sub_folders_are_cases_and_unused_files_are_listed(tmp_path, caplog):
    root = tmp_path / "study"
    write_dicom_series(root / "images" / "patient_a", ct_volume(seed=1))
    write_dicom_series(root / "images" / "patient_b", ct_volume(seed=2))
    write_nifti(root / "images" / "scan_c.nii.gz", ct_volume(seed=3))
    write_nifti(root / "labels" / "patient_a.nii.gz", organ_label())
    (root / "README.txt").write_text("notes\n", encoding="utf-8")
    (root / "images" / "protocol.pdf").write_bytes(b"%PDF-1.4\n")
    (root / "extra").mkdir()
    (root / "extra" / "table.csv").write_text("a,b\n", encoding="utf-8")
    write_dicom_series(root / "images" / "deep" / "series1", ct_volume(seed=4))  # too deep
    (root / ".DS_Store").write_bytes(b"junk")  # hidden: not worth a line

    with caplog.at_level(logging.WARNING, logger="voxssl.data.adapters.folder"):
        cases = find_cases(source(root, images="images", labels="labels"))
    by_id = {c.case_id: c for c in cases}
    assert set(by_id) == {"patient_a", "patient_b", "scan_c"}
    assert by_id["patient_a"].image == root / "images" / "patient_a"
    assert by_id["patient_a"].label == root / "labels" / "patient_a.nii.gz"
    assert by_id["patient_b"].label is None
    message = unused_warning(caplog)
    for name in ("README.txt", "protocol.pdf", "extra/table.csv", "deep/series1"):
        assert name in message, message
    assert "options.recursive" in message  # the hint for the series one level too deep
    assert ".DS_Store" not in message

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="voxssl.data.adapters.folder"):
        cases = find_cases(source(root, images="images", labels="labels", recursive=True))
    assert "deep_series1" in {c.case_id for c in cases}
    message = unused_warning(caplog, level="INFO")  # only notes are left: information
    assert "deep/series1" not in message and "README.txt" in message


def test_labels_folder_not_configured_is_pointed_out(tmp_path, caplog):
    write_nifti(tmp_path / "imagesTr" / "a.nii.gz", ct_volume())
    write_nifti(tmp_path / "labelsTr" / "a.nii.gz", organ_label())
    with caplog.at_level(logging.WARNING, logger="voxssl.data.adapters.folder"):
        cases = find_cases(source(tmp_path, images="imagesTr"))
    assert [c.case_id for c in cases] == ["a"] and cases[0].label is None
    message = unused_warning(caplog)
    assert "labelsTr/a.nii.gz" in message and "options.labels" in message


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_preprocess_cli_reads_dicom_series_and_refuses_label_maps_and_an_mr(tmp_path):
    """A folder that mixes CT images (NIfTI and DICOM), a label map and an MR scan: the CT cases
    are cached; the label map and the MR are refused with one line each, before caching."""
    root = tmp_path / "mixed"
    write_nifti(root / "ct_1.nii.gz", ct_volume(seed=1))
    write_dicom_series(root / "ct_2", ct_volume(seed=2))
    write_nifti(root / "ct_1_seg.nii.gz", organ_label())  # a label map among the images
    rng = np.random.default_rng(5)
    mr = (rng.random((24, 20, 6)) * 600).astype(np.float32)  # MR magnitudes: never negative
    write_nifti(root / "t2.nii.gz", mr)
    cache = tmp_path / "cache"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "cache_dir": str(cache),
                    "num_workers": 1,
                    "sources": [
                        {"adapter": "folder", "name": "mixed", "root": str(root), "modality": "ct"}
                    ],
                },
                "preprocess": {"ct": {"spacing": list(SPACING)}},
            }
        ),
        encoding="utf-8",
    )
    script = Path(sys.executable).parent / "voxssl"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "voxssl.cli"]
    done = subprocess.run(
        [*command, "preprocess", str(recipe), "-q"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=_environment(),
        timeout=300,
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    failed = [line for line in done.stderr.splitlines() if "FAILED" in line]
    assert len(failed) == 2, done.stderr
    (label_line,) = [line for line in failed if "ct_1_seg" in line]
    assert "label map" in label_line and "options.labels" in label_line
    (mr_line,) = [line for line in failed if "t2" in line]
    assert "does not look like CT" in mr_line
    manifest = json.loads((cache / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(manifest["cases"]) == ["mixed/ct_1", "mixed/ct_2"]
    assert not (cache / "mixed" / "ct_1_seg").exists() and not (cache / "mixed" / "t2").exists()
    cached = np.load(cache / "mixed" / "ct_2" / "image.npy")
    assert cached.shape[-1] == 6  # the six DICOM slices, stacked at 8 mm


# ------------------------------------------------------------------------------------- channels


def test_amos_style_names_are_cases_not_channels(tmp_path):
    for name in ("amos_0001", "amos_0013", "amos_0507"):
        write_nifti(tmp_path / f"{name}.nii.gz", ct_volume())
    cases = find_cases(source(tmp_path))
    assert [c.case_id for c in cases] == ["amos_0001", "amos_0013", "amos_0507"]
    assert all(not c.channels for c in cases)


def test_two_cases_named_like_channels_stay_two_cases_and_the_fix_is_suggested(tmp_path, caplog):
    write_nifti(tmp_path / "case_0000.nii.gz", ct_volume(seed=0))
    write_nifti(tmp_path / "case_0001.nii.gz", ct_volume(seed=1))
    with caplog.at_level(logging.WARNING, logger="voxssl.data.adapters.folder"):
        cases = find_cases(source(tmp_path))
    assert [c.case_id for c in cases] == ["case_0000", "case_0001"]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "options.channels: true" in warning

    cases = find_cases(source(tmp_path, channels=True))
    assert [c.case_id for c in cases] == ["case"]
    assert [p.name for p in cases[0].channels] == ["case_0000.nii.gz", "case_0001.nii.gz"]


def test_nnunet_layout_turns_channels_on_and_checks_their_count(tmp_path):
    for case in ("abd_001", "abd_002"):
        for channel in (0, 1):
            write_nifti(tmp_path / "imagesTr" / f"{case}_{channel:04d}.nii.gz", ct_volume())
    (tmp_path / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "T1", "1": "T2"}, "file_ending": ".nii.gz"}),
        encoding="utf-8",
    )
    cases = find_cases(source(tmp_path, images="imagesTr"))
    assert [(c.case_id, len(c.channels)) for c in cases] == [("abd_001", 2), ("abd_002", 2)]

    (tmp_path / "imagesTr" / "abd_002_0001.nii.gz").unlink()
    with pytest.raises(DataError, match=r"abd_002.*1 channel.*dataset.json lists 2"):
        find_cases(source(tmp_path, images="imagesTr"))


def test_channels_that_are_not_in_a_row_suggest_turning_channels_off(tmp_path):
    for name in ("amos_0001", "amos_0013"):
        write_nifti(tmp_path / f"{name}.nii.gz", ct_volume())
    with pytest.raises(DataError, match=r"options.channels: false"):
        find_cases(source(tmp_path, channels=True))


@pytest.mark.real
def test_the_shared_real_folder_mixing_ct_mr_dicom_and_label_maps(real_data, tmp_path):
    """The reported case on real scans: the folder holds a CT, an MR, a DICOM CT series and three
    label maps. The two CTs are cached; the MR and the label maps are refused, one line each."""
    from voxssl.config.recipe import recipe_from_dict
    from voxssl.data.pipeline import run_preprocess

    recipe = recipe_from_dict(
        {
            "data": {
                "cache_dir": str(tmp_path / "cache"),
                "num_workers": 1,
                "sources": [
                    {"adapter": "folder", "name": "real", "root": str(real_data), "modality": "ct"}
                ],
            },
            "preprocess": {"ct": {"spacing": [4.0, 4.0, 8.0]}},
        }
    )
    summary = run_preprocess(recipe, progress=False)
    assert sorted(summary.processed) == ["real/dicom_ct", "real/ts_ct"]
    reasons = {f.key: f.reason for f in summary.failed}
    assert set(reasons) == {
        "real/ts_mr",
        "real/ts_ct_label_btcv",
        "real/ts_mr_label_btcv",
        "real/dicom_ct_label_btcv_RAS",
    }
    assert "does not look like CT" in reasons["real/ts_mr"]
    assert all("label map" in r for k, r in reasons.items() if "label" in k)
