"""Dataset adapters on tiny fake layouts (real NIfTI / DICOM / PNG files written in tmp_path)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxssl.config.data import SourceConfig
from voxssl.data import readers
from voxssl.data.adapters import ADAPTERS, annotated_classes_from_label, find_cases
from voxssl.data.adapters.amos import AMOS_TO_CANONICAL, amos_modality
from voxssl.data.adapters.folder import match_key
from voxssl.data.adapters.organ_names import canonical_id_of_name
from voxssl.data.dicom import read_series_image, read_series_layout, read_slice_header
from voxssl.errors import ConfigError, DataError
from voxssl.vocabulary import IGNORE_INDEX


def nifti(path: Path, shape=(4, 4, 2), value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full(shape, value, dtype=np.int16), np.eye(4)), str(path))
    return path


def source(adapter: str, root: Path, **kwargs) -> SourceConfig:
    return SourceConfig(adapter=adapter, root=root, **kwargs)


def by_id(cases):
    return {case.case_id: case for case in cases}


# ------------------------------------------------------------------------------------------- BTCV


def test_btcv_nested_synapse_layout(tmp_path):
    raw = tmp_path / "Abdomen" / "RawData" / "RawData"
    for i in (1, 2, 21):
        nifti(raw / "Training" / "img" / f"img{i:04d}.nii.gz")
        nifti(raw / "Training" / "label" / f"label{i:04d}.nii.gz")
    nifti(raw / "Testing" / "img" / "img0061.nii.gz")
    (raw / "Training" / "img" / "._img0001.nii.gz").write_bytes(b"junk")

    cases = find_cases(source("btcv", tmp_path))
    assert [c.case_id for c in cases] == ["img0001", "img0002", "img0021", "img0061"]
    cases = by_id(cases)
    assert cases["img0021"].label == raw / "Training" / "label" / "label0021.nii.gz"
    assert cases["img0021"].modality == "ct" and cases["img0021"].label_map is None
    assert cases["img0061"].label is None and cases["img0061"].metadata["split"] == "test"
    assert [c.case_id for c in find_cases(source("btcv", tmp_path, labelled_only=True))] == [
        "img0001",
        "img0002",
        "img0021",
    ]
    assert len(find_cases(source("btcv", tmp_path, options={"include_test": False}))) == 3


def test_btcv_monai_layout_and_duplicate_scans(tmp_path):
    nifti(tmp_path / "imagesTr" / "img0035.nii.gz")
    nifti(tmp_path / "labelsTr" / "label0035.nii.gz")
    nifti(tmp_path / "imagesTr" / "img0001.nii.gz")
    nifti(tmp_path / "imagesTs" / "img0070.nii.gz")
    (tmp_path / "dataset_0.json").write_text(
        json.dumps(
            {
                "training": [
                    {"image": "imagesTr/img0001.nii.gz", "label": "labelsTr/label0001.nii.gz"}
                ],
                "validation": [
                    {"image": "imagesTr/img0035.nii.gz", "label": "labelsTr/label0035.nii.gz"}
                ],
            }
        ),
        encoding="utf-8",
    )
    cases = by_id(find_cases(source("btcv", tmp_path)))
    assert cases["img0035"].has_label and cases["img0035"].metadata["split"] == "validation"
    assert cases["img0001"].metadata["split"] == "train" and not cases["img0001"].has_label
    assert not cases["img0070"].has_label

    nifti(tmp_path / "RawData" / "Training" / "img" / "img0035.nii.gz")
    with pytest.raises(DataError, match="img0035"):
        find_cases(source("btcv", tmp_path))


def test_btcv_rejects_mr(tmp_path):
    nifti(tmp_path / "imagesTr" / "img0001.nii.gz")
    with pytest.raises(ConfigError, match="modality"):
        find_cases(source("btcv", tmp_path, modality="mr"))


# ------------------------------------------------------------------------------------------- AMOS


def test_amos_modality_rule():
    assert amos_modality(1) == "ct" and amos_modality(500) == "ct"
    assert amos_modality(501) == "mr" and amos_modality(600) == "mr"
    assert amos_modality(5514) == "ct" and amos_modality(601) == "ct"


def test_amos_layout_label_map_and_modality_filter(tmp_path):
    root = tmp_path / "amos22"
    (root).mkdir()
    (root / "dataset.json").write_text("{}", encoding="utf-8")
    for i in (1, 507):
        nifti(root / "imagesTr" / f"amos_{i:04d}.nii.gz")
        nifti(root / "labelsTr" / f"amos_{i:04d}.nii.gz")
    nifti(root / "imagesVa" / "amos_0008.nii.gz")  # early release: no labelsVa
    nifti(root / "imagesTs" / "amos_5514.nii.gz")

    cases = by_id(find_cases(source("amos", tmp_path)))
    assert set(cases) == {"amos_0001", "amos_0507", "amos_0008", "amos_5514"}
    assert cases["amos_0507"].modality == "mr" and cases["amos_5514"].modality == "ct"
    lm = cases["amos_0001"].label_map
    assert lm[10] == 11 and lm[12] == 13 and lm[13] == 14 and lm[15] == 16 and lm[9] == 9
    assert cases["amos_0008"].label is None and cases["amos_0008"].metadata["split"] == "validation"

    mr = find_cases(source("amos", tmp_path, modality="mr"))
    assert [c.case_id for c in mr] == ["amos_0507"]
    train = find_cases(source("amos", tmp_path, options={"splits": ["train"]}))
    assert [c.case_id for c in train] == ["amos_0001", "amos_0507"]


# ------------------------------------------------------------------------------------------ FLARE


def test_flare22_layout(tmp_path):
    tr = tmp_path / "FLARE2022" / "Training"
    nifti(tr / "FLARE22_LabeledCase50" / "images" / "FLARE22_Tr_0001_0000.nii.gz")
    nifti(tr / "FLARE22_LabeledCase50" / "labels" / "FLARE22_Tr_0001.nii.gz")
    nifti(tr / "FLARE22_UnlabeledCase1-1000" / "Case_00001_0000.nii.gz")
    nifti(tmp_path / "FLARE2022" / "Tuning" / "images" / "FLARETs_0001_0000.nii.gz")
    nifti(tmp_path / "FLARE2022" / "Tuning" / "labels" / "FLARETs_0001.nii.gz")
    nifti(tmp_path / "FLARE2022" / "Testing" / "FLARETs_0001_0000.nii.gz")

    cases = by_id(find_cases(source("flare", tmp_path)))
    assert set(cases) == {"FLARE22_Tr_0001", "Case_00001", "tuning_FLARETs_0001", "FLARETs_0001"}
    labelled = cases["FLARE22_Tr_0001"]
    assert labelled.label.name == "FLARE22_Tr_0001.nii.gz" and labelled.metadata["split"] == "train"
    assert (
        labelled.label_map[1] == 6 and labelled.label_map[3] == 1 and labelled.label_map[12] == 14
    )
    assert labelled.label_map[13] == 3 and labelled.label_map[14] == IGNORE_INDEX
    assert not labelled.metadata.get("partial_labels")
    assert annotated_classes_from_label([0, 1, 3], labelled) is None  # full label
    assert (
        cases["Case_00001"].metadata["split"] == "unlabelled" and cases["Case_00001"].label is None
    )
    assert cases["tuning_FLARETs_0001"].has_label and not cases["FLARETs_0001"].has_label
    assert cases["FLARETs_0001"].metadata["split"] == "test"
    only = find_cases(source("flare", tmp_path, options={"splits": ["unlabelled"]}))
    assert [c.case_id for c in only] == ["Case_00001"]


def test_flare23_partial_labels(tmp_path):
    nifti(tmp_path / "imagesTr2200" / "FLARE23_0001_0000.nii.gz")
    nifti(tmp_path / "labelsTr2200" / "FLARE23_0001.nii.gz")
    nifti(tmp_path / "unlabeledTr1800" / "FLARE23_2201.nii.gz")
    cases = by_id(find_cases(source("flare", tmp_path, options={"tumor": "background"})))
    assert set(cases) == {"FLARE23_0001", "FLARE23_2201"}
    partial = cases["FLARE23_0001"]
    assert partial.metadata["partial_labels"] is True and partial.annotated is None
    assert partial.label_map[14] == 0
    # canonical ids present after the label map: spleen, liver, ignore (the tumour)
    assert annotated_classes_from_label(np.array([0, 6, 1, 255]), partial) == (1, 6)
    assert cases["FLARE23_2201"].label is None


# ------------------------------------------------------------------------------------- MSD, nnU-Net


def _msd(root: Path, labels: dict) -> Path:
    nifti(root / "imagesTr" / "spleen_2.nii.gz")
    nifti(root / "labelsTr" / "spleen_2.nii.gz")
    nifti(root / "imagesTs" / "spleen_1.nii.gz")
    (root / "imagesTr" / "._spleen_2.nii.gz").write_bytes(b"\0")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "name": "Spleen",
                "modality": {"0": "CT"},
                "labels": labels,
                "training": [
                    {"image": "./imagesTr/spleen_2.nii.gz", "label": "./labelsTr/spleen_2.nii.gz"},
                    {
                        "image": "./imagesTr/._spleen_2.nii.gz",
                        "label": "./labelsTr/._spleen_2.nii.gz",
                    },
                ],
                "test": ["./imagesTs/spleen_1.nii.gz"],
            }
        ),
        encoding="utf-8",
    )
    return root


def test_msd_maps_names(tmp_path):
    _msd(tmp_path, {"0": "background", "1": "spleen"})
    cases = by_id(find_cases(source("msd", tmp_path)))
    assert set(cases) == {"spleen_2", "spleen_1"}
    assert cases["spleen_2"].label_map == {1: 1} and cases["spleen_2"].modality == "ct"
    assert cases["spleen_2"].image == tmp_path / "imagesTr" / "spleen_2.nii.gz"
    assert cases["spleen_1"].label is None


def test_msd_unknown_label_names(tmp_path):
    _msd(tmp_path, {"0": "background", "1": "liver", "2": "cancer"})
    with pytest.raises(DataError, match=r"2 \(cancer\).*label_map"):
        find_cases(source("msd", tmp_path))
    case = find_cases(source("msd", tmp_path, options={"label_map": {2: "liver"}}))[1]
    assert case.label_map == {1: 6, 2: 6}
    case = find_cases(source("msd", tmp_path, options={"unknown_labels": "ignore"}))[1]
    assert case.label_map == {1: 6, 2: IGNORE_INDEX}
    with pytest.raises(ConfigError, match=r"label_map\.2"):
        find_cases(source("msd", tmp_path, options={"label_map": {2: "tumour"}}))


def test_nnunet_multichannel(tmp_path):
    root = tmp_path / "Dataset123_Abd"
    for case in ("abd_001", "abd_002"):
        nifti(root / "imagesTr" / f"{case}_0000.nii.gz")
        nifti(root / "imagesTr" / f"{case}_0001.nii.gz")
    nifti(root / "labelsTr" / "abd_001.nii.gz")
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "T1", "1": "T2"},
                "file_ending": ".nii.gz",
                "numTraining": 2,
                "labels": {"background": 0, "liver": 1, "kidney_left": 2, "arota": 3},
            }
        ),
        encoding="utf-8",
    )
    cases = find_cases(source("nnunet", root))
    assert [c.case_id for c in cases] == ["abd_001", "abd_002"]
    assert cases[0].modality == "mr" and cases[0].label_map == {1: 6, 2: 3, 3: 8}
    assert [p.name for p in cases[0].channels] == ["abd_001_0000.nii.gz", "abd_001_0001.nii.gz"]
    assert cases[1].label is None

    (root / "imagesTr" / "abd_002_0001.nii.gz").unlink()
    with pytest.raises(DataError, match="abd_002"):
        find_cases(source("nnunet", root))


# --------------------------------------------------------------------------------- folder and NAKO


def test_folder_matches_labels_by_name(tmp_path):
    nifti(tmp_path / "images" / "img0001.nii.gz")
    nifti(tmp_path / "images" / "ct_7_0000.nii.gz")
    nifti(tmp_path / "images" / "p3.nii.gz")
    nifti(tmp_path / "labels" / "label0001.nii.gz")
    nifti(tmp_path / "labels" / "ct_7.nii.gz")
    opts = {"images": "images", "labels": "labels", "label_map": {1: "liver", 2: "ignore"}}
    cases = by_id(find_cases(source("folder", tmp_path, modality="mr", options=opts)))
    assert set(cases) == {"img0001", "ct_7", "p3"}
    assert (
        cases["img0001"].label.name == "label0001.nii.gz"
        and cases["ct_7"].label.name == "ct_7.nii.gz"
    )
    assert cases["p3"].label is None and cases["ct_7"].modality == "mr"
    assert cases["ct_7"].label_map == {1: 6, 2: IGNORE_INDEX}
    assert match_key("p3_seg") == "p3" and match_key("image_12_0000") == "12"
    with pytest.raises(ConfigError, match="modality"):
        find_cases(source("folder", tmp_path, options=opts))
    nifti(tmp_path / "images" / "0001.nii.gz")
    with pytest.raises(DataError, match="'0001' and 'img0001'"):
        find_cases(source("folder", tmp_path, modality="ct", options=opts))


def test_nako_manifest_channels(tmp_path):
    rows = ["subject,contrast,path"]
    for subject in ("100001", "100002"):
        for contrast in ("opp", "in", "fat", "water"):
            nifti(tmp_path / subject / f"{contrast}.nii.gz")
            rows.append(f"{subject},{contrast},{subject}/{contrast}.nii.gz")
    (tmp_path / "manifest.csv").write_text(
        "\n".join(rows[:-1]) + "\n", encoding="utf-8"
    )  # 100002 lacks water
    with pytest.raises(DataError, match=r"100002.*water"):
        find_cases(source("nako", tmp_path))
    cases = find_cases(source("nako", tmp_path, options={"missing": "skip"}))
    assert [c.case_id for c in cases] == ["100001"]
    assert [p.stem.split(".")[0] for p in cases[0].channels] == ["water", "fat", "in", "opp"]
    assert cases[0].modality == "mr" and cases[0].image == cases[0].channels[0]

    (tmp_path / "list.yaml").write_text(
        "- {subject: s1, contrast: water, path: 100001/water.nii.gz}\n"
        "- {subject: s1, contrast: fat, path: 100001/fat.nii.gz}\n",
        encoding="utf-8",
    )
    cases = find_cases(
        source("nako", tmp_path, options={"manifest": "list.yaml", "contrasts": ["fat", "water"]})
    )
    assert [p.name for p in cases[0].channels] == ["fat.nii.gz", "water.nii.gz"]


# ----------------------------------------------------------------------------------------- errors


def test_errors_name_the_folder_and_option(tmp_path):
    with pytest.raises(ConfigError, match="unknown adapter 'btvc'"):
        find_cases(source("btvc", tmp_path))
    with pytest.raises(DataError, match="folder not found"):
        find_cases(source("btcv", tmp_path / "nope"), where="data.sources.0")
    with pytest.raises(DataError, match=str(tmp_path)):
        find_cases(source("btcv", tmp_path))  # empty
    with pytest.raises(ConfigError, match=r"data\.sources\.1\.options\.include_tests"):
        find_cases(
            source("btcv", tmp_path, options={"include_tests": False}), where="data.sources.1"
        )
    with pytest.raises(ConfigError, match=r"options\.include_test.*true or false"):
        find_cases(source("btcv", tmp_path, options={"include_test": "no"}), where="data.sources.1")
    nifti(tmp_path / "Testing" / "img" / "img0061.nii.gz")
    with pytest.raises(DataError, match="no labelled"):
        find_cases(source("btcv", tmp_path, labelled_only=True))


def test_registry_and_names():
    assert set(ADAPTERS) == {"btcv", "amos", "flare", "chaos", "nako", "msd", "nnunet", "folder"}
    assert canonical_id_of_name("postcava") == 9 and canonical_id_of_name("Gall Bladder") == 4
    assert (
        canonical_id_of_name("prostate/uterus") == 16
        and canonical_id_of_name("Right adrenal gland") == 12
    )
    assert (
        canonical_id_of_name("inferior vena cava (IVC)") == 9
        and canonical_id_of_name("cancer") is None
    )
    btcv_json = [
        "spleen",
        "rkid",
        "lkid",
        "gall",
        "eso",
        "liver",
        "sto",
        "aorta",
        "IVC",
        "veins",
        "pancreas",
        "rad",
        "lad",
    ]
    assert [canonical_id_of_name(n) for n in btcv_json] == list(range(1, 14))
    amos_json = [
        "spleen",
        "right kidney",
        "left kidney",
        "gall bladder",
        "esophagus",
        "liver",
        "stomach",
        "arota",
        "postcava",
        "pancreas",
        "right adrenal gland",
        "left adrenal gland",
        "duodenum",
        "bladder",
        "prostate/uterus",
    ]
    assert [canonical_id_of_name(n) for n in amos_json] == [
        AMOS_TO_CANONICAL[i] for i in range(1, 16)
    ]


# ------------------------------------------------------------------------------------------ CHAOS


def write_dicom_slice(
    path: Path, pixels: np.ndarray, z: float, modality: str, series_uid: str
) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(pixels.astype(np.int16))
    image.SetSpacing((0.7, 0.9))
    for tag, value in {
        "0008|0060": modality,
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
        "0020|000e": series_uid,  # deliberately inconsistent, like CHAOS
        "0020|0032": f"-10.0\\-20.0\\{z}",
        "0020|0037": "1\\0\\0\\0\\1\\0",
        "0018|0050": "3.0",
    }.items():
        image.SetMetaData(tag, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)


def png(path: Path, values: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)


#: file index -> z position: file names deliberately NOT in position order.
Z_OF_FILE = {0: 6.0, 1: 0.0, 2: 9.0, 3: 3.0}
#: file index -> the (row, column) its ground truth marks
MARK_OF_FILE = {0: (1, 2), 1: (5, 5), 2: (7, 0), 3: (3, 3)}


def make_chaos_ct(patient: Path) -> None:
    dicom = patient / "DICOM_anon"
    dicom.mkdir(parents=True)
    for index, z in Z_OF_FILE.items():
        write_dicom_slice(
            dicom / f"i{index:04d},0000b.dcm",
            np.full((8, 6), 100 + index),
            z,
            "CT",
            f"1.2.3.{index}",
        )
        gt = np.zeros((8, 6))
        gt[MARK_OF_FILE[index]] = 255
        png(patient / "Ground" / f"liver_GT_{index:03d}.png", gt)


def test_chaos_ct_label_lands_on_the_right_slice_and_pixel(tmp_path):
    import SimpleITK as sitk

    from voxssl.data.chaos_png import read_case_label

    make_chaos_ct(tmp_path / "Train_Sets" / "CT" / "1")
    (tmp_path / "Test_Sets" / "CT" / "1" / "DICOM_anon").mkdir(parents=True)  # no Ground
    cases = find_cases(source("chaos", tmp_path))
    assert [c.case_id for c in cases] == ["ct_01", "test_ct_01"] and cases[1].label is None
    case = cases[0]
    assert case.label_format == "chaos_png" and case.modality == "ct"

    image = read_series_image(read_series_layout(case.image))
    pixels = sitk.GetArrayFromImage(image)  # (z, y, x)
    assert pixels.shape == (4, 8, 6)
    assert list(pixels[:, 0, 0]) == [101, 103, 100, 102]  # ascending position, not file order
    assert image.GetSpacing() == pytest.approx((0.7, 0.9, 3.0))
    assert image.GetOrigin() == pytest.approx((-10.0, -20.0, 0.0))

    label = read_case_label(case, image)
    values = sitk.GetArrayFromImage(label)
    assert label.GetSize() == image.GetSize() and label.GetOrigin() == image.GetOrigin()
    for index, (row, column) in MARK_OF_FILE.items():
        z = int(np.flatnonzero(pixels[:, 0, 0] == 100 + index)[0])
        assert values[z, row, column] == 6
    assert (values == 6).sum() == 4 and set(np.unique(values)) == {0, 6}

    # a reader that reorients the image gets the label on its own grid, still aligned
    flipped = sitk.DICOMOrient(image, "LPI")
    relabel = sitk.GetArrayFromImage(read_case_label(case, flipped))
    np.testing.assert_array_equal(relabel, sitk.GetArrayFromImage(sitk.DICOMOrient(label, "LPI")))


def test_chaos_mr_grey_ranges_and_t1dual(tmp_path):
    import SimpleITK as sitk

    from voxssl.data.chaos_png import read_case_label

    patient = tmp_path / "MR" / "3"
    grey = np.array([[0, 63, 58, 126, 112, 189], [178, 252, 241, 100, 30, 0]] * 4)  # 8x6
    expected = np.array([[0, 6, 6, 2, 2, 3], [3, 1, 1, 0, 0, 0]] * 4)
    for series in ("T2SPIR/DICOM_anon", "T1DUAL/DICOM_anon/InPhase"):
        for n, z in ((2, 5.0), (1, 10.0)):
            write_dicom_slice(
                patient / series / f"IMG-0004-0000{n}.dcm", np.full((8, 6), n), z, "MR", "9.9"
            )
    for n, z in ((7, 5.0), (8, 10.0)):  # OutPhase numbering differs from the Ground's
        write_dicom_slice(
            patient / "T1DUAL/DICOM_anon/OutPhase" / f"IMG-0004-0000{n}.dcm",
            np.full((8, 6), n),
            z,
            "MR",
            "9.9",
        )
    for series in ("T2SPIR", "T1DUAL"):
        png(patient / series / "Ground" / "IMG-0004-00001.png", grey)
        png(patient / series / "Ground" / "IMG-0004-00002.png", np.zeros((8, 6)))

    cases = by_id(find_cases(source("chaos", tmp_path, modality="mr")))
    assert set(cases) == {"mr_03_t2spir", "mr_03_t1in", "mr_03_t1out"}
    for case_id in cases:
        image = read_series_image(read_series_layout(cases[case_id].image))
        label = sitk.GetArrayFromImage(read_case_label(cases[case_id], image))
        np.testing.assert_array_equal(label[1], expected)  # IMG-...1 is the upper slice (z = 10)
        assert not label[0].any()
    assert (
        find_cases(source("chaos", tmp_path, options={"sequences": ["t2spir"]}))[0].case_id
        == "mr_03_t2spir"
    )


def test_chaos_missing_png_is_an_error(tmp_path):
    from voxssl.data.chaos_png import read_chaos_label

    patient = tmp_path / "CT" / "2"
    make_chaos_ct(patient)
    (patient / "Ground" / "liver_GT_002.png").unlink()
    with pytest.raises(DataError, match=r"i0002,0000b\.dcm"):
        read_chaos_label(patient / "Ground", patient / "DICOM_anon")


def test_chaos_label_aligned_through_the_preprocessing_reader(tmp_path):
    """End to end with voxssl's reader: in RAS, every marked voxel sits on its own DICOM slice."""
    make_chaos_ct(tmp_path / "CT" / "1")
    case = find_cases(source("chaos", tmp_path))[0]
    image = readers.read_case_image(case)
    label = readers.read_case_label(case, image)
    assert label.shape == image.data.shape
    marked = np.argwhere(label == 6)
    assert len(marked) == len(MARK_OF_FILE)
    for x, y, z in marked:
        file_index = int(image.data[x, y, z]) - 100
        row, column = MARK_OF_FILE[file_index]
        # the DICOM pixel (row, column) of that file is the voxel the label marks
        expected = image.data[:, :, z]
        assert expected.shape == (6, 8)
        ijk = np.linalg.inv(image.original_affine) @ image.affine @ np.array([x, y, z, 1.0])
        assert (round(ijk[0]), round(ijk[1])) == (column, row)


# ---------------------------------------------------------------------------------------- scripts


@pytest.mark.multiprocess
def test_preprocessing_script_end_to_end(tmp_path):
    """``python preprocessing/btcv.py ROOT --cache DIR`` fills the cache; a bad option exits 1 with a message."""
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "preprocessing" / "btcv.py"
    ct = np.full((24, 20, 6), -1000, dtype=np.int16)
    ct[4:20, 4:16] = 40
    label = np.zeros(ct.shape, dtype=np.uint8)
    label[8:12, 8:12, 2:4] = 6
    root = tmp_path / "RawData" / "Training"
    for folder, name, array in (("img", "img0001", ct), ("label", "label0001", label)):
        (root / folder).mkdir(parents=True)
        nib.save(
            nib.Nifti1Image(array, np.diag([2.0, 2.0, 4.0, 1.0])),
            str(root / folder / f"{name}.nii.gz"),
        )
    cache = tmp_path / "cache"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path),
            "--cache",
            str(cache),
            "--workers",
            "1",
            "--quiet",
            "--set",
            "preprocess.ct.spacing=[2.0,2.0,4.0]",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (cache / "btcv" / "img0001" / "label.npy").is_file() and (
        cache / "recipe.resolved.yaml"
    ).is_file()
    cached = np.load(cache / "btcv" / "img0001" / "label.npy")
    assert (cached == 6).sum() == 4 * 4 * 2  # same grid: every labelled voxel kept

    bad = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path),
            "--cache",
            str(cache),
            "--set",
            "data.sources.0.options.include_tset=false",
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "data.sources.0.options.include_tset" in bad.stderr


@pytest.mark.real
def test_chaos_png_on_a_real_dicom_series(real_data, tmp_path):
    """Real 512x512 CT series renamed CHAOS-style in scrambled order: the liver drawn per slice from
    the reference RAS label (placed through the DICOM tags alone) comes back voxel for voxel."""

    reference = nib.load(real_data / "dicom_ct_label_btcv_RAS.nii.gz")
    liver = np.asarray(reference.dataobj) == 6
    to_voxel = np.linalg.inv(reference.affine)
    patient = tmp_path / "CT" / "5"
    (patient / "DICOM_anon").mkdir(parents=True)
    files = sorted((real_data / "dicom_ct").iterdir())
    order = np.random.default_rng(0).permutation(len(files))
    for index, source_file in zip(order, files, strict=True):
        (patient / "DICOM_anon" / f"i{index:04d},0000b.dcm").symlink_to(source_file)
        header = read_slice_header(source_file)
        rows, columns = np.mgrid[0 : header.size[1], 0 : header.size[0]]
        lps = (
            header.position[:, None, None]
            + header.row_direction[:, None, None] * columns * header.pixel_spacing[1]
            + header.column_direction[:, None, None] * rows * header.pixel_spacing[0]
        )
        ras = np.stack([-lps[0], -lps[1], lps[2], np.ones_like(lps[0])]).reshape(4, -1)
        i, j, k = np.rint(to_voxel @ ras)[:3].astype(int)
        png(
            patient / "Ground" / f"liver_GT_{index:03d}.png",
            (liver[i, j, k] * 255).reshape(rows.shape),
        )

    case = find_cases(source("chaos", tmp_path))[0]
    image = readers.read_case_image(case)
    label = readers.read_case_label(case, image)
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-3)
    np.testing.assert_array_equal(label == 6, liver)
    assert liver.sum() > 1000
