"""Phantom landmarks: where they are, and that they map to the same anatomy through the files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from voxssl.data.phantoms import generate_phantom, write_phantom_dataset
from voxssl.data.phantoms.grid import PhantomGrid
from voxssl.data.phantoms.landmarks import read_landmarks, shape_frame_to_grid
from voxssl.errors import DataError
from voxssl.vocabulary import ORGAN_IDS

SHAPE, SPACING = (80, 64, 40), (5.0, 5.0, 6.0)


@pytest.fixture(scope="module")
def phantoms():
    return [
        generate_phantom(seed, modality, SHAPE, SPACING)
        for seed in (0, 1)
        for modality in ("ct", "mr")
    ]


def _label_at(phantom, voxel) -> int:
    return int(phantom.label[tuple(np.rint(voxel).astype(int))])


def test_landmarks_lie_on_their_anatomy(phantoms):
    for phantom in phantoms:
        by_kind: dict[str, list] = {}
        for landmark in phantom.landmarks:
            by_kind.setdefault(landmark.kind, []).append(landmark)
            world = phantom.affine @ np.append(landmark.voxel, 1.0)
            np.testing.assert_allclose(world[:3], landmark.world, atol=1e-3)
        assert len(by_kind["vertebra"]) >= 4  # 240 mm of spine, one vertebra per ~33 mm
        for landmark in by_kind["vertebra"]:
            assert _label_at(phantom, landmark.voxel) == ORGAN_IDS["vertebrae"], landmark
        names = {lm.name for lm in by_kind["junction"]}
        assert {"pancreas_head", "pancreas_neck", "pancreas_body", "pancreas_tail"} <= names
        for landmark in by_kind["junction"]:
            if landmark.name.startswith("pancreas_"):
                assert _label_at(phantom, landmark.voxel) == ORGAN_IDS["pancreas"], landmark
            else:  # the hilum: medial to its kidney, within a few cm of it
                kidney = ORGAN_IDS[landmark.name.removesuffix("_hilum")]
                voxels = np.argwhere(phantom.label == kidney)
                distance = np.min(np.linalg.norm((voxels - landmark.voxel) * SPACING, axis=1))
                assert distance < 25.0, landmark


def test_centroids_match_a_naive_reference(phantoms):
    phantom = phantoms[0]
    centroids = {lm.name: lm for lm in phantom.landmarks if lm.kind == "organ_centroid"}
    for organ in ("liver", "spleen", "left_kidney", "aorta", "vertebrae"):
        expected = np.argwhere(phantom.label == ORGAN_IDS[organ]).mean(axis=0)
        np.testing.assert_allclose(centroids[f"{organ}_centroid"].voxel, expected, atol=1e-3)


def test_deformation_is_inverted():
    grid = PhantomGrid(SHAPE, SPACING)
    rng = np.random.default_rng(0)
    mesh = np.meshgrid(*grid.coarse_axes, indexing="ij")
    grid.deform(tuple(6.0 * np.sin(m / 70.0 + k) for k, m in enumerate(mesh)))
    targets = rng.uniform(-80, 80, size=(10, 3))
    found = shape_frame_to_grid(grid, targets)
    # the deformed coordinate at ``found`` (trilinear on the coarse grid) is the target
    from scipy.ndimage import map_coordinates

    origin = np.array([a[0] for a in grid.coarse_axes])
    index = ((found - origin) / np.array(grid.coarse_spacing)).T
    deformed = np.stack([map_coordinates(c, index, order=1) for c in grid.deformed], 1)
    np.testing.assert_allclose(deformed, targets, atol=1e-3)


def test_dataset_writes_landmarks_in_world_and_stored_voxels(tmp_path):
    write_phantom_dataset(
        tmp_path,
        n=2,
        shape=(48, 40, 20),
        spacing=(8.0, 8.0, 12.0),
        orientation="LPS",
        progress=False,
    )
    image = nib.load(str(tmp_path / "images" / "phantom_ct_00001.nii.gz"))
    label = np.asarray(nib.load(str(tmp_path / "labels" / "phantom_ct_00001.nii.gz")).dataobj)
    landmarks = read_landmarks(tmp_path / "landmarks" / "phantom_ct_00001.json")
    assert {entry["kind"] for entry in landmarks.values()} == {
        "organ_centroid",
        "vertebra",
        "junction",
    }
    for name, entry in landmarks.items():
        world = image.affine @ np.append(entry["voxel"], 1.0)
        np.testing.assert_allclose(world[:3], entry["world_mm"], atol=1e-3)
        if entry["kind"] == "vertebra":  # the stored-voxel index hits the vertebra in the LPS file
            assert label[tuple(np.rint(entry["voxel"]).astype(int))] == ORGAN_IDS["vertebrae"], name
    document = json.loads((tmp_path / "landmarks" / "phantom_ct_00000.json").read_text())
    assert document["image"] == "phantom_ct_00000.nii.gz" and document["modality"] == "ct"
    # a smaller re-run removes the surplus case's landmarks with its images
    write_phantom_dataset(
        tmp_path,
        n=1,
        shape=(48, 40, 20),
        spacing=(8.0, 8.0, 12.0),
        orientation="LPS",
        progress=False,
    )
    assert not (tmp_path / "landmarks" / "phantom_ct_00001.json").exists()


def test_read_landmarks_rejects_other_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match=r"x\.json"):
        read_landmarks(path)
