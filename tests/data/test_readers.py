"""Readers: NIfTI and DICOM to RAS, the original geometry kept, labels on the image grid, bad inputs."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from voxssl.data.case import Case
from voxssl.data.readers import map_label_ids, read_case_image, read_case_label, read_volume
from voxssl.errors import DataError


def affine_for(axcodes: str, spacing, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    """A voxel -> RAS affine whose array axes point along ``axcodes`` (e.g. "LPS", "LAI", "SRA")."""
    direction = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.eye(4)
    affine[:3, :3] = 0
    for axis, code in enumerate(axcodes):
        world, sign = direction[code]
        affine[world, axis] = sign * spacing[axis]
    affine[:3, 3] = origin
    return affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def write_dicom_series(
    folder: Path,
    volume_xyz: np.ndarray,
    spacing,
    origin_lps,
    names=None,
    row_cosine=(1.0, 0.0, 0.0),
    column_cosine=(0.0, 1.0, 0.0),
) -> Path:
    """One DICOM file per slice with ImagePositionPatient / ImageOrientationPatient / PixelSpacing."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(row_cosine, column_cosine)
    names = names or [f"slice{z:03d}.dcm" for z in range(volume_xyz.shape[2])]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(volume_xyz.shape[2]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume_xyz[:, :, z].T.astype(np.int16)))
        image.SetSpacing((float(spacing[0]), float(spacing[1])))
        position = np.asarray(origin_lps, dtype=float) + normal * spacing[2] * z
        for tag, value in [
            ("0008|0060", "CT"),
            ("0020|0032", "\\".join(f"{v:.4f}" for v in position)),
            ("0020|0037", "\\".join(f"{v:.6f}" for v in (*row_cosine, *column_cosine))),
            ("0028|0030", f"{spacing[1]:.4f}\\{spacing[0]:.4f}"),
            ("0020|0013", str(z + 1)),
        ]:
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / names[z]))
        writer.Execute(image)
    return folder


@pytest.mark.parametrize("axcodes", ["LPS", "LAI", "SRA", "RAS"])
def test_world_point_keeps_its_value_after_reorientation(tmp_path, axcodes):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(7, 5, 4)).astype(np.float32)
    affine = affine_for(axcodes, (0.8, 1.5, 3.0))
    volume = read_volume(write_nifti(tmp_path / "img.nii.gz", data, affine))

    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert np.allclose(volume.original_affine, affine)
    assert volume.original_shape == (7, 5, 4)
    for index in [(0, 0, 0), (6, 4, 3), (2, 3, 1)]:
        world = affine @ [*index, 1]
        ras_index = np.rint(np.linalg.inv(volume.affine) @ world)[:3].astype(int)
        assert volume.data[tuple(ras_index)] == data[index]
    assert np.all(volume.affine[:3, :3].diagonal() > 0)


def test_integer_ct_keeps_int16_and_float_becomes_float32(tmp_path):
    ct = read_volume(
        write_nifti(tmp_path / "ct.nii.gz", np.full((4, 4, 4), -1000, np.int16), np.eye(4))
    )
    other = read_volume(
        write_nifti(tmp_path / "mr.nii.gz", np.ones((4, 4, 4), np.float64), np.eye(4))
    )
    assert ct.data.dtype == np.int16
    assert other.data.dtype == np.float32


def test_truncated_nifti_is_a_data_error_naming_the_file(tmp_path):
    path = write_nifti(
        tmp_path / "img.nii.gz", np.random.default_rng(0).normal(size=(20, 20, 20)), np.eye(4)
    )
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(DataError, match=r"img\.nii\.gz.*truncated or corrupt"):
        read_volume(path)


def test_gzip_with_a_corrupt_stream_is_a_data_error(tmp_path):
    path = tmp_path / "img.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    with pytest.raises(DataError, match=r"img\.nii\.gz"):
        read_volume(path)


@pytest.mark.parametrize("shape", [(10, 10), (10, 10, 1), (1, 10, 10)])
def test_2d_image_is_rejected(tmp_path, shape):
    path = write_nifti(tmp_path / "flat.nii.gz", np.zeros(shape, np.float32), np.eye(4))
    with pytest.raises(DataError, match=r"flat\.nii\.gz.*3D"):
        read_volume(path)


def test_4d_image_is_rejected_unless_channels_are_intended(tmp_path):
    data = np.random.default_rng(0).normal(size=(6, 5, 4, 3)).astype(np.float32)
    path = write_nifti(tmp_path / "multi.nii.gz", data, affine_for("LPS", (1, 1, 2)))
    with pytest.raises(DataError, match=r"multi\.nii\.gz.*4D"):
        read_volume(path)
    volume = read_volume(path, allow_channels=True)
    assert volume.data.shape == (3, 6, 5, 4)
    assert np.array_equal(volume.data[2], data[::-1, ::-1, :, 2])  # LPS -> RAS flips x and y


def test_trailing_singleton_4th_dimension_is_a_3d_image(tmp_path):
    path = write_nifti(tmp_path / "img.nii.gz", np.zeros((4, 5, 6, 1), np.float32), np.eye(4))
    assert read_volume(path).data.shape == (4, 5, 6)


def test_nan_in_image_is_rejected(tmp_path):
    data = np.zeros((5, 5, 5), np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"nan\.nii\.gz.*2 NaN or infinite"):
        read_volume(write_nifti(tmp_path / "nan.nii.gz", data, np.eye(4)))


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_volume(tmp_path / "absent.nii.gz")
    (tmp_path / "scan.mha").write_bytes(b"x")
    with pytest.raises(DataError, match=r"scan\.mha.*not a NIfTI"):
        read_volume(tmp_path / "scan.mha")


def _case(
    tmp_path,
    image_axcodes="LPS",
    label_axcodes="LPS",
    label_shape=(6, 5, 4),
    shift=0.0,
    label_map=None,
):
    rng = np.random.default_rng(1)
    image = rng.normal(size=(6, 5, 4)).astype(np.float32)
    image_affine = affine_for(image_axcodes, (1.0, 1.0, 2.0))
    write_nifti(tmp_path / "img.nii.gz", image, image_affine)
    label = rng.integers(0, 4, size=(6, 5, 4)).astype(np.uint8)
    # the same voxels, stored in another axis order: permute/flip the array and fix the affine
    stored = nib.orientations.apply_orientation(
        label,
        nib.orientations.ornt_transform(
            nib.io_orientation(image_affine), nib.orientations.axcodes2ornt(label_axcodes)
        ),
    )
    label_affine = image_affine @ nib.orientations.inv_ornt_aff(
        nib.orientations.ornt_transform(
            nib.io_orientation(image_affine), nib.orientations.axcodes2ornt(label_axcodes)
        ),
        label.shape,
    )
    if label_shape != label.shape:
        stored = np.zeros(label_shape, np.uint8)
    label_affine = label_affine.copy()
    label_affine[0, 3] += shift
    write_nifti(tmp_path / "lab.nii.gz", stored, label_affine)
    case = Case(
        "c1", tmp_path / "img.nii.gz", "ct", label=tmp_path / "lab.nii.gz", label_map=label_map
    )
    return case, label


def test_label_stored_in_another_orientation_lands_on_the_image_voxels(tmp_path):
    case, label = _case(tmp_path, image_axcodes="LPS", label_axcodes="RAI")
    image = read_case_image(case)
    ras_label = read_case_label(case, image)
    expected = read_volume(tmp_path / "img.nii.gz")  # the image grid in RAS
    assert ras_label.dtype == np.uint8
    assert ras_label.shape == expected.spatial_shape
    assert np.array_equal(
        ras_label,
        nib.orientations.apply_orientation(label, nib.io_orientation(affine_for("LPS", (1, 1, 2)))),
    )


def test_label_on_another_grid_names_both_files(tmp_path):
    case, _ = _case(tmp_path, label_shape=(6, 5, 5))
    with pytest.raises(DataError, match=r"lab.nii.gz.*img.nii.gz"):
        read_case_label(case, read_case_image(case))
    case, _ = _case(tmp_path, shift=0.5)  # half a voxel off
    with pytest.raises(DataError, match=r"lab.nii.gz.*not on the grid.*img.nii.gz"):
        read_case_label(case, read_case_image(case))


def test_label_map_sends_ids_to_canonical_and_unknown_to_background(tmp_path):
    case, _ = _case(tmp_path, label_map={1: 6, 2: 1})
    mapped = read_case_label(case, read_case_image(case))
    original = read_case_label(
        Case("c1", case.image, "ct", label=case.label), read_case_image(case)
    )
    assert np.array_equal(mapped, np.select([original == 1, original == 2], [6, 1], 0))


def test_map_label_ids_rejects_non_integer_and_too_large_values():
    with pytest.raises(DataError, match="not integers"):
        map_label_ids(np.array([0.0, 0.5]), None, Path("l.nii.gz"))
    with pytest.raises(DataError, match="uint8"):
        map_label_ids(np.array([0, 300]), None, Path("l.nii.gz"))
    assert map_label_ids(np.array([0, 300]), {300: 6}, Path("l.nii.gz")).tolist() == [0, 6]


def test_multichannel_case_is_stacked_and_channels_must_share_the_grid(tmp_path):
    rng = np.random.default_rng(2)
    affine = affine_for("LPS", (1.4, 1.4, 3.0))
    paths = [
        write_nifti(
            tmp_path / f"s_000{c}.nii.gz", rng.normal(size=(5, 4, 3)).astype(np.float32), affine
        )
        for c in range(3)
    ]
    volume = read_case_image(Case("s", paths[0], "mr", channels=tuple(paths)))
    assert volume.data.shape == (3, 5, 4, 3)
    write_nifti(paths[2], rng.normal(size=(5, 4, 4)).astype(np.float32), affine)
    with pytest.raises(DataError, match=r"channel .*s_0002\.nii\.gz.*s_0000\.nii\.gz"):
        read_case_image(Case("s", paths[0], "mr", channels=tuple(paths)))


def test_dicom_slices_are_stacked_by_position_not_by_name(tmp_path):
    volume = np.random.default_rng(3).integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)
    # names sort as slices 2, 1, 3, 0
    folder = write_dicom_series(
        tmp_path / "series",
        volume,
        (0.7, 0.8, 2.5),
        (10.0, 20.0, 30.0),
        names=["x3.dcm", "x1.dcm", "x0.dcm", "x2.dcm"],
    )
    read = read_volume(folder)
    assert read.original_shape == (6, 5, 4)
    assert np.allclose(
        read.original_affine,
        [[-0.7, 0, 0, -10], [0, -0.8, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1]],
        atol=1e-4,
    )
    assert np.array_equal(read.data, volume[::-1, ::-1, :])  # LPS rows/cols -> RAS
    assert nib.aff2axcodes(read.affine) == ("R", "A", "S")


def test_dicom_series_descending_positions_and_feet_first(tmp_path):
    volume = np.random.default_rng(4).integers(-1000, 1000, size=(4, 4, 5)).astype(np.int16)
    # slice normal = row x column = (1,0,0) x (0,0,-1) = (0,1,0): a coronal stack
    folder = write_dicom_series(
        tmp_path / "cor",
        volume,
        (1.0, 2.0, 3.0),
        (0.0, 0.0, 0.0),
        row_cosine=(1.0, 0.0, 0.0),
        column_cosine=(0.0, 0.0, -1.0),
    )
    read = read_volume(folder)
    world = read.original_affine @ [1, 2, 3, 1]
    assert np.allclose(world[:3], [-1.0, -9.0, -4.0])  # LPS (1, 9, -4) -> RAS (-1, -9, -4)
    ras_index = np.rint(np.linalg.inv(read.affine) @ world)[:3].astype(int)
    assert read.data[tuple(ras_index)] == volume[1, 2, 3]


def test_unreadable_dicom_and_empty_folder(tmp_path):
    volume = np.zeros((4, 4, 3), np.int16)
    folder = write_dicom_series(tmp_path / "series", volume, (1, 1, 1), (0, 0, 0))
    (folder / "broken.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match=r"broken\.dcm.*not a readable DICOM"):
        read_volume(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*no DICOM"):
        read_volume(tmp_path / "empty")


def test_dicom_missing_slice_is_reported(tmp_path):
    folder = write_dicom_series(
        tmp_path / "series", np.zeros((4, 4, 5), np.int16), (1, 1, 2), (0, 0, 0)
    )
    (folder / "slice002.dcm").unlink()
    with pytest.raises(DataError, match="slices are missing"):
        read_volume(folder)


def test_4d_nifti_is_multichannel_only_when_the_adapter_names_the_channels(tmp_path):
    path = write_nifti(tmp_path / "brats.nii.gz", np.zeros((5, 4, 3, 2), np.float32), np.eye(4))
    with pytest.raises(DataError, match=r"brats\.nii\.gz.*4D"):
        read_case_image(Case("b", path, "mr"))
    assert read_case_image(
        Case("b", path, "mr", metadata={"channel_names": ["T1", "T2"]})
    ).data.shape == (2, 5, 4, 3)
    with pytest.raises(DataError, match=r"2 channel.*lists 3"):
        read_case_image(Case("b", path, "mr", metadata={"channel_names": ["T1", "T2", "FLAIR"]}))


def test_chaos_png_label_follows_the_dicom_positions_onto_the_ras_grid(tmp_path):
    """CHAOS-like MR: file names in another order than the slice positions, one PNG per slice."""
    from PIL import Image

    from voxssl.data.adapters.chaos import LABEL_DICOM_DIR

    rng = np.random.default_rng(7)
    volume = rng.integers(0, 500, size=(6, 5, 4)).astype(np.int16)
    names = ["IMG-0001-00003.dcm", "IMG-0001-00001.dcm", "IMG-0001-00004.dcm", "IMG-0001-00002.dcm"]
    dicom = write_dicom_series(
        tmp_path / "T2SPIR" / "DICOM_anon",
        volume,
        (1.5, 1.5, 6.0),
        (-50.0, 30.0, 10.0),
        names=names,
    )
    ground = tmp_path / "T2SPIR" / "Ground"
    ground.mkdir()
    grey = {0: 0, 6: 63, 2: 126, 3: 189, 1: 252}
    truth = rng.choice(list(grey), size=volume.shape).astype(
        np.uint8
    )  # canonical ids, (col, row, slice)
    for z, name in enumerate(names):
        png = np.vectorize(grey.get)(truth[:, :, z]).T.astype(np.uint8)  # PNG rows = DICOM rows
        Image.fromarray(png).save(ground / name.replace(".dcm", ".png"))
    case = Case(
        "mr_01_t2spir",
        dicom,
        "mr",
        label=ground,
        label_format="chaos_png",
        metadata={LABEL_DICOM_DIR: dicom},
    )
    image = read_case_image(case)
    label = read_case_label(case, image)
    assert label.shape == image.spatial_shape
    assert np.array_equal(label, truth[::-1, ::-1, :])  # LPS rows/columns -> RAS, like the image


def test_scan_and_chaos_label_readers_list_and_check_dicom_folders_alike(tmp_path):
    """One rule (voxssl.data.dicom) for both DICOM readers: the same files are slices, and the
    same broken series is refused with the same message."""
    from PIL import Image

    from voxssl.data.chaos_png import read_chaos_label
    from voxssl.data.dicom import SKIP_NAMES, dicom_files

    volume = np.arange(4 * 4 * 5, dtype=np.int16).reshape(4, 4, 5)
    names = [f"IMG-{z:05d}.dcm" for z in range(5)]
    dicom = write_dicom_series(tmp_path / "DICOM", volume, (1, 1, 2), (0, 0, 0), names=names)
    for junk in [*SKIP_NAMES, ".hidden.dcm", "._IMG-00000.dcm"]:
        (dicom / junk).write_bytes(b"not a slice")
    ground = tmp_path / "Ground"
    ground.mkdir()
    for name in names:
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(ground / name.replace(".dcm", ".png"))
    assert [p.name for p in dicom_files(dicom)] == names
    assert read_volume(dicom).original_shape == (4, 4, 5)
    assert read_chaos_label(ground, dicom).GetSize() == (4, 4, 5)

    (dicom / names[2]).unlink()
    (ground / names[2].replace(".dcm", ".png")).unlink()
    for read in (lambda: read_volume(dicom), lambda: read_chaos_label(ground, dicom)):
        with pytest.raises(
            DataError, match=r"slices are missing.*IMG-00001\.dcm and IMG-00003\.dcm"
        ):
            read()
