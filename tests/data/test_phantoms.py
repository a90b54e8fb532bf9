"""Phantom generator: determinism, anatomy, world-space placement, non-separability, files, CLI."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from voxssl.data.phantoms import (
    ORIENTATIONS,
    PHANTOM_ORGANS,
    generate_phantom,
    reorient,
    write_phantom,
    write_phantom_dataset,
)
from voxssl.errors import ConfigError
from voxssl.vocabulary import ORGAN_IDS, is_known

#: A small grid (~0.2 M voxels) with the default 400 x 320 x 240 mm field of view.
SMALL_SHAPE = (80, 64, 40)
SMALL_SPACING = (5.0, 5.0, 6.0)
#: Plausible visible volumes (ml) for an adult abdomen in that field of view.
VOLUME_RANGES_ML = {
    "liver": (600, 3000),
    "spleen": (50, 600),
    "gallbladder": (2, 150),
    "right_kidney": (60, 400),
    "left_kidney": (60, 400),
    "pancreas": (20, 200),
    "stomach": (60, 1200),
    "aorta": (20, 300),
    "inferior_vena_cava": (20, 300),
    "vertebrae": (100, 1000),
    "body_wall_muscle": (800, 8000),
    "fat": (1000, 15000),
}


@pytest.fixture(scope="module")
def ct_phantoms():
    return [generate_phantom(seed, "ct", SMALL_SHAPE, SMALL_SPACING) for seed in range(3)]


@pytest.fixture(scope="module")
def mr_phantoms():
    return [generate_phantom(seed, "mr", SMALL_SHAPE, SMALL_SPACING) for seed in range(3)]


def world_centroids(image: nib.Nifti1Image) -> dict[int, np.ndarray]:
    """RAS world centroid (mm) of every label, computed through the file's affine."""
    data = np.asarray(image.dataobj)
    centroids = {}
    for organ in np.unique(data):
        voxels = np.argwhere(data == organ)
        centroids[int(organ)] = nib.affines.apply_affine(image.affine, voxels).mean(axis=0)
    return centroids


def test_same_seed_same_phantom_other_seed_other_phantom():
    first = generate_phantom(7, "ct", SMALL_SHAPE, SMALL_SPACING)
    again = generate_phantom(7, "ct", SMALL_SHAPE, SMALL_SPACING)
    other = generate_phantom(8, "ct", SMALL_SHAPE, SMALL_SPACING)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.label, again.label)
    np.testing.assert_array_equal(first.affine, again.affine)
    assert first.params == again.params
    assert np.mean(first.label != other.label) > 0.02
    assert np.abs(first.image - other.image).mean() > 10.0


def test_arrays_types_and_geometry(ct_phantoms, mr_phantoms):
    for phantom in ct_phantoms + mr_phantoms:
        assert phantom.image.shape == phantom.label.shape == SMALL_SHAPE
        assert phantom.image.dtype == np.float32 and phantom.label.dtype == np.uint8
        assert np.isfinite(phantom.image).all()
        assert phantom.spacing == pytest.approx(SMALL_SPACING)
        assert all(is_known(int(v)) for v in np.unique(phantom.label))
    for phantom in mr_phantoms:
        assert phantom.image.min() >= 0.0  # magnitude images


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_every_organ_present_with_plausible_volume(modality, ct_phantoms, mr_phantoms):
    for phantom in ct_phantoms if modality == "ct" else mr_phantoms:
        voxel_ml = float(np.prod(phantom.spacing)) / 1000.0
        for name, (low, high) in VOLUME_RANGES_ML.items():
            volume = float((phantom.label == ORGAN_IDS[name]).sum()) * voxel_ml
            assert low <= volume <= high, (
                f"seed {phantom.seed}: {name} {volume:.0f} ml not in [{low}, {high}]"
            )


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((8, 8, 8), (1.0, 1.0, 1.0)), ((8, 8, 8), (60.0, 60.0, 60.0)), ((20, 90, 9), (3.0, 0.7, 9.0))],
)
def test_odd_grids_still_give_valid_volumes(shape, spacing):
    for modality in ("ct", "mr"):
        phantom = generate_phantom(1, modality, shape, spacing)
        assert phantom.image.shape == shape and np.isfinite(phantom.image).all()
        assert all(is_known(int(v)) for v in np.unique(phantom.label))


def test_ct_air_body_and_partial_volume(ct_phantoms):
    for phantom in ct_phantoms:
        image, label = phantom.image, phantom.label
        outside = label == 0
        assert np.median(image[outside & (image < -500)]) == pytest.approx(-1000, abs=30)
        body = image > -500
        assert 0.2 < body.mean() < 0.8
        # organ voxels are tissue, except the stomach's gas cap and boundary voxels
        solid = np.isin(
            label, [ORGAN_IDS[n] for n in ("liver", "spleen", "pancreas", "body_wall_muscle")]
        )
        assert np.mean(image[solid] > -300) > 0.99
        # partial volume: body-surface voxels mix fat and air, values noise alone never reaches
        mixed = (image > -800) & (image < -300)
        assert mixed.sum() > 0.005 * body.sum()


def _bayes_accuracy(
    values: np.ndarray, labels: np.ndarray, classes: list[int], bins: int = 64
) -> float:
    """Balanced accuracy of the best per-voxel classifier on intensity alone (histogram Bayes,
    fitted on the test voxels themselves, so it is an upper bound for any intensity threshold)."""
    edges = np.linspace(*np.percentile(values, [0.5, 99.5]), bins + 1)
    binned = np.clip(np.digitize(values, edges) - 1, 0, bins - 1)
    histograms = np.stack(
        [np.bincount(binned[labels == c], minlength=bins) / np.sum(labels == c) for c in classes]
    )
    predicted = np.asarray(classes)[histograms.argmax(axis=0)][binned]
    return float(np.mean([np.mean(predicted[labels == c] == c) for c in classes]))


@pytest.mark.parametrize("modality", ["ct", "mr"])
def test_organs_are_not_separable_by_intensity(modality, ct_phantoms, mr_phantoms):
    classes = [ORGAN_IDS[n] for n in ("liver", "spleen", "pancreas", "body_wall_muscle")]
    values, labels, per_case = [], [], []
    for phantom in ct_phantoms if modality == "ct" else mr_phantoms:
        keep = np.isin(phantom.label, classes)
        values.append(phantom.image[keep])
        labels.append(phantom.label[keep])
        per_case.append(_bayes_accuracy(values[-1], labels[-1], classes))
    pooled = _bayes_accuracy(np.concatenate(values), np.concatenate(labels), classes)
    # perfect separation would be 1.0, chance 0.25
    assert pooled < 0.7, f"{modality}: intensity alone separates the organs too well ({pooled:.2f})"
    assert max(per_case) < 0.9, f"{modality}: one case is separable by intensity ({per_case})"


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_left_right_anatomy_in_world_coordinates(orientation, tmp_path, ct_phantoms):
    phantom = ct_phantoms[0]
    image_path, label_path = tmp_path / "image.nii.gz", tmp_path / "label.nii.gz"
    write_phantom(phantom, image_path, label_path, orientation)
    label = nib.load(label_path)
    assert "".join(nib.aff2axcodes(label.affine)) == orientation
    c = world_centroids(label)
    organ = {name: c[ORGAN_IDS[name]] for name in PHANTOM_ORGANS.values()}
    x, y = 0, 1  # RAS: +x = patient right, +y = anterior
    assert organ["liver"][x] > organ["spleen"][x]
    assert organ["right_kidney"][x] > organ["vertebrae"][x] > organ["left_kidney"][x]
    assert organ["inferior_vena_cava"][x] > organ["aorta"][x]
    assert organ["aorta"][x] < organ["vertebrae"][x] and organ["aorta"][y] > organ["vertebrae"][y]
    assert (
        organ["right_kidney"][y] < organ["aorta"][y] and organ["left_kidney"][y] < organ["aorta"][y]
    )
    assert organ["vertebrae"][y] < organ["liver"][y] and organ["vertebrae"][y] < organ["stomach"][y]
    assert (
        organ["gallbladder"][x] > organ["vertebrae"][x]
        and organ["gallbladder"][2] < organ["liver"][2]
    )
    # back to RAS through the affine gives the generator's arrays exactly
    canonical = nib.as_closest_canonical(nib.load(image_path))
    np.testing.assert_array_equal(
        np.asarray(nib.as_closest_canonical(label).dataobj), phantom.label
    )
    np.testing.assert_allclose(canonical.affine, phantom.affine, atol=1e-4)
    np.testing.assert_array_equal(
        np.asarray(canonical.dataobj), np.clip(np.rint(phantom.image), -32768, 32767)
    )


def test_reorient_rejects_bad_codes():
    with pytest.raises(ConfigError, match="orientation"):
        reorient(np.zeros((2, 2, 2)), np.eye(4), "LRS")


def test_dataset_files_layout_and_determinism(tmp_path):
    shape, spacing = (48, 40, 20), (8.0, 8.0, 12.0)
    grid = {"shape": shape, "spacing": spacing, "progress": False}
    first = write_phantom_dataset(tmp_path / "a", n=3, modality="ct", seed=5, **grid)
    again = write_phantom_dataset(tmp_path / "b", n=3, modality="ct", seed=5, **grid)
    assert [p.name for p in first] == [f"phantom_ct_{i:05d}.nii.gz" for i in range(3)]
    # no name looks like an nnU-Net channel suffix (case_0000, case_0001 = one two-channel case)
    assert not any(re.search(r"_\d{4}$", p.name.removesuffix(".nii.gz")) for p in first)
    for path_a, path_b in zip(first, again, strict=True):
        label_a = path_a.parents[1] / "labels" / path_a.name
        assert path_a.read_bytes() == path_b.read_bytes()
        assert label_a.read_bytes() == (path_b.parents[1] / "labels" / path_b.name).read_bytes()
        image, label = nib.load(path_a), nib.load(label_a)
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        assert image.shape == label.shape == shape  # no orientation in ORIENTATIONS permutes axes
        np.testing.assert_allclose(image.header.get_zooms(), spacing)
        np.testing.assert_allclose(image.affine, label.affine)
        assert image.header["sform_code"] == 1
    meta = json.loads((tmp_path / "a" / "dataset.json").read_text(encoding="utf-8"))
    assert meta["numTraining"] == 3 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["labels"] == {
        "background": 0,
        **{name: i for i, name in sorted(PHANTOM_ORGANS.items())},
    }
    assert [e["image"] for e in meta["training"]] == [f"./images/{p.name}" for p in first]
    assert (tmp_path / "a" / "dataset.json").read_bytes() == (
        tmp_path / "b" / "dataset.json"
    ).read_bytes()
    # a different data set seed gives different cases; a smaller re-run keeps case 0, drops the rest
    other = write_phantom_dataset(tmp_path / "c", n=1, modality="ct", seed=6, **grid)
    assert other[0].read_bytes() != first[0].read_bytes()
    write_phantom_dataset(tmp_path / "a", n=1, modality="ct", seed=5, **grid)
    assert first[0].read_bytes() == again[0].read_bytes()
    assert sorted(p.name for p in (tmp_path / "a" / "images").iterdir()) == [
        "phantom_ct_00000.nii.gz"
    ]
    assert not list((tmp_path / "a").rglob(".tmp-*"))


def test_dataset_rejects_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match=r"number of phantoms.*got 0"):
        write_phantom_dataset(tmp_path, n=0)
    with pytest.raises(ConfigError, match="modality"):
        write_phantom_dataset(tmp_path, n=1, modality="pet")
    with pytest.raises(ConfigError, match="shape"):
        write_phantom_dataset(tmp_path, n=1, shape=(4, 4, 4))
    with pytest.raises(ConfigError, match="seed"):
        write_phantom_dataset(tmp_path, n=1, seed=-1)
    with pytest.raises(ConfigError, match="spacing"):
        write_phantom_dataset(tmp_path, n=1, spacing=(1.0, 0.0, 1.0))
    assert not any(tmp_path.iterdir())  # nothing written before the arguments were checked
    write_phantom_dataset(tmp_path, n=1, modality="mr", shape=(32, 32, 16), progress=False)
    with pytest.raises(ConfigError, match="mr phantom data set"):
        write_phantom_dataset(tmp_path, n=1, modality="ct", shape=(32, 32, 16), progress=False)


def _cli() -> typer.Typer:
    from voxssl.commands.phantoms import register

    app = typer.Typer()
    app.callback()(lambda: None)  # keep "phantoms" a sub-command, as in voxssl.cli
    register(app)
    return app


def test_cli_writes_a_dataset(tmp_path):
    out = tmp_path / "mr"
    args = [
        "phantoms",
        str(out),
        "--cases",
        "2",
        "--modality",
        "mr",
        "--seed",
        "3",
        "--shape",
        "40,32,16",
    ]
    result = CliRunner().invoke(_cli(), [*args, "--spacing", "10,10,15", "--orientation", "LPS"])
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert meta["numTraining"] == 2 and meta["modality"] == "mr"
    image = nib.load(out / "images" / "phantom_mr_00001.nii.gz")
    assert image.shape == (40, 32, 16) and "".join(nib.aff2axcodes(image.affine)) == "LPS"
    np.testing.assert_allclose(image.header.get_zooms(), (10, 10, 15))


def test_cli_reports_bad_n(tmp_path):
    result = CliRunner().invoke(_cli(), ["phantoms", str(tmp_path / "x"), "--cases", "0"])
    assert result.exit_code == 2 and "--cases" in result.output  # typer checks the range
    result = CliRunner().invoke(_cli(), ["phantoms", str(tmp_path / "x"), "--shape", "40,32"])
    assert result.exit_code == 2 and "X,Y,Z" in result.output
    result = CliRunner().invoke(_cli(), ["phantoms", str(tmp_path / "x"), "--modality", "pet"])
    assert result.exit_code != 0 and "modality" in result.output
