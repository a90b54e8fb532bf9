"""Preprocessing geometry and intensities: world points stay put, labels round-trip exactly."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from voxssl.config.data import CTPreprocessConfig, MRPreprocessConfig, PreprocessConfig
from voxssl.data.body_mask import body_mask
from voxssl.data.geometry import to_original_geometry
from voxssl.data.preprocess import invert_intensity_mapping, preprocess_volume
from voxssl.data.readers import to_ras
from voxssl.errors import DataError


def affine_for(axcodes: str, spacing, origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    direction = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.zeros((4, 4))
    affine[3, 3] = 1
    for axis, code in enumerate(axcodes):
        world, sign = direction[code]
        affine[world, axis] = sign * spacing[axis]
    affine[:3, 3] = origin
    return affine


def ct_phantom(shape=(40, 36, 14), seed=0):
    """Air around a soft-tissue block with a lung-like air pocket and random organ labels inside."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000, np.int16)
    body = (slice(5, shape[0] - 6), slice(4, shape[1] - 5), slice(1, shape[2] - 2))
    image[body] = 40
    image[15:20, 12:18, 4:8] = -900  # enclosed air: inside the body
    label = np.zeros(shape, np.uint8)
    region = label[body]
    region[...] = rng.integers(0, 5, size=region.shape)  # worst case for nearest neighbour: noise
    return image, label


def config(ct_spacing=(1.0, 1.0, 2.0), mr_spacing=(1.0, 1.0, 2.0)) -> PreprocessConfig:
    return PreprocessConfig(
        ct=CTPreprocessConfig(spacing=ct_spacing), mr=MRPreprocessConfig(spacing=mr_spacing)
    )


def stored_volume(image, affine):
    return to_ras(image, affine, path=__import__("pathlib").Path("mem.nii.gz"))


@pytest.mark.parametrize("axcodes", ["LPS", "LAI", "PIR"])
def test_label_round_trip_is_exact_when_target_spacing_is_finer(axcodes):
    image, label = ct_phantom()
    source_spacing = (1.7, 1.3, 3.1)
    affine = affine_for(axcodes, source_spacing)
    volume = stored_volume(image, affine)
    ras_label = nib.orientations.apply_orientation(label, volume.orientation)
    cached_image, cached_label, _, meta = preprocess_volume(
        volume, "ct", config((0.9, 1.3, 1.2)), ras_label
    )  # <= every source spacing

    back, back_affine = to_original_geometry(cached_label, meta, order="nearest")
    assert back.shape == label.shape
    assert np.allclose(back_affine, affine)
    assert np.array_equal(back, label)  # every labelled voxel is inside the crop here
    assert (
        cached_image.dtype == np.float32 and cached_image.min() >= 0.0 and cached_image.max() <= 1.0
    )


def test_downsampling_returns_each_voxel_its_nearest_coarse_neighbour():
    image, label = ct_phantom(shape=(41, 37, 15))
    volume = stored_volume(image, affine_for("LPS", (0.5, 0.7, 1.0)))
    ras_label = nib.orientations.apply_orientation(label, volume.orientation)
    _, cached_label, _, meta = preprocess_volume(volume, "ct", config((1.0, 1.4, 3.0)), ras_label)
    back, _ = to_original_geometry(cached_label, meta)
    ras_back = nib.orientations.apply_orientation(back, volume.orientation)
    ratio, box = np.array(meta["ratio"]), np.array(meta["crop_box"])
    assert np.allclose(ratio, [2.0, 2.0, 3.0])
    # the statement of voxssl.data.geometry for ratio > 1 (integer ratios): voxel i gets the label
    # of voxel round(round(i / r) * r); multiples of r get their own label back.
    index = []
    for axis, n in enumerate(ras_label.shape):
        j = np.clip(np.floor(np.arange(n) / ratio[axis] + 0.5), box[axis, 0], box[axis, 1] - 1)
        index.append(np.clip(np.floor(j * ratio[axis] + 0.5), 0, n - 1).astype(int))
    expected = ras_label[np.ix_(*index)]
    inside = np.zeros(ras_label.shape, bool)
    inside[
        np.ix_(
            *[
                (np.floor(np.arange(n) / r + 0.5) >= lo) & (np.floor(np.arange(n) / r + 0.5) < hi)
                for n, r, (lo, hi) in zip(ras_label.shape, ratio, box, strict=True)
            ]
        )
    ] = True
    assert np.array_equal(ras_back[inside], expected[inside])
    on_grid = ras_label[::2, ::2, ::3]
    assert np.array_equal(
        ras_back[::2, ::2, ::3][inside[::2, ::2, ::3]], on_grid[inside[::2, ::2, ::3]]
    )


def test_a_world_point_lands_where_expected_after_reorientation_resampling_and_cropping():
    image = np.full((30, 26, 12), -1000, np.int16)
    image[4:26, 3:22, 1:11] = 0
    marker = (17, 9, 6)
    image[marker] = 1000
    affine = affine_for("LAI", (1.2, 0.9, 2.5))
    volume = stored_volume(image, affine)
    cached, _, _, meta = preprocess_volume(volume, "ct", config((0.6, 0.9, 1.25)))
    world = affine @ [*marker, 1]
    cached_index = np.linalg.inv(np.array(meta["affine"])) @ world
    assert np.allclose(
        cached_index[:3], np.rint(cached_index[:3]), atol=1e-6
    )  # lands on a cached voxel centre
    assert cached[tuple(np.rint(cached_index[:3]).astype(int))] == pytest.approx(
        1.0
    )  # 1000 HU = window top
    assert np.allclose(np.linalg.norm(np.array(meta["affine"])[:3, :3], axis=0), meta["spacing"])
    assert nib.aff2axcodes(np.array(meta["affine"])) == ("R", "A", "S")


def test_ct_crop_box_is_the_box_above_minus_500_hu_and_window_scales_to_unit_range():
    image = np.full((20, 20, 10), -1000, np.int16)
    image[3:15, 5:17, 2:9] = -400
    image[6, 8, 4] = 2000
    volume = stored_volume(image, np.diag([1.0, 1.0, 2.0, 1.0]))
    cached, _, body, meta = preprocess_volume(volume, "ct", config((1.0, 1.0, 2.0)))
    assert meta["crop_box"] == [[3, 15], [5, 17], [2, 9]]
    assert cached.shape == (12, 12, 7)
    assert cached.min() == pytest.approx((-400 + 1350) / 2350)
    assert cached.max() == 1.0
    assert body.all()  # no air left after the crop
    hu = invert_intensity_mapping(cached, meta["intensity"])
    assert hu[3, 3, 2] == pytest.approx(1000)  # 2000 HU clipped to the window top


def test_body_mask_keeps_enclosed_air_and_drops_border_air():
    image, _ = ct_phantom()
    volume = stored_volume(image, np.diag([1.0, 1.0, 2.0, 1.0]))
    _cached, _, body, meta = preprocess_volume(volume, "ct", config((1.0, 1.0, 2.0)))
    lo = np.array(meta["crop_box"])[:, 0]
    assert body[tuple(np.array([17, 14, 5]) - lo)]  # the enclosed air pocket
    padded = np.full((10, 10, 4), 0.0, np.float32)
    padded[3:7, 3:7, :] = 1.0
    mask = body_mask(padded, 0.5)
    assert mask[3:7, 3:7].all() and not mask[0].any() and mask.sum() == 4 * 4 * 4


def test_empty_ct_is_a_data_error():
    volume = stored_volume(np.full((8, 8, 4), -1000, np.int16), np.eye(4))
    with pytest.raises(DataError, match=r"mem\.nii\.gz.*no voxel above the crop threshold"):
        preprocess_volume(volume, "ct", config())


def test_mr_is_clipped_to_percentiles_and_cropped_above_threshold():
    rng = np.random.default_rng(5)
    image = np.zeros((30, 30, 8), np.float32)
    image[6:24, 8:22, 1:7] = rng.uniform(200, 600, size=(18, 14, 6))
    image[10, 10, 3] = 1e5  # a spike: clipped by the 99.9th percentile
    volume = stored_volume(image, affine_for("LPS", (1.5, 1.5, 3.0)))
    cached, _, body, meta = preprocess_volume(volume, "mr", config(mr_spacing=(1.5, 1.5, 3.0)))
    low, high = meta["intensity"]["low"][0], meta["intensity"]["high"][0]
    assert low == pytest.approx(np.percentile(image, 0.01))
    assert high == pytest.approx(np.percentile(image, 99.9)) and high < 1e5
    assert cached.shape[0] <= 18 and cached.shape[1] <= 14
    assert cached.max() == 1.0 and body.any()


def test_multichannel_mr_scales_each_channel():
    rng = np.random.default_rng(6)
    channels = np.zeros((2, 20, 20, 6), np.float32)
    channels[0, 4:16, 4:16, 1:5] = rng.uniform(100, 200, size=(12, 12, 4))
    channels[1, 4:16, 4:16, 1:5] = rng.uniform(1000, 3000, size=(12, 12, 4))
    volume = stored_volume(np.moveaxis(channels, 0, -1), np.eye(4))
    cached, _, body, meta = preprocess_volume(volume, "mr", config(mr_spacing=(1.0, 1.0, 1.0)))
    assert cached.shape[0] == 2 and body.shape == cached.shape[1:]
    assert meta["intensity"]["high"][1] > 10 * meta["intensity"]["high"][0] / 2
    back, _ = to_original_geometry(cached, meta, order="linear")
    assert back.shape == (2, 20, 20, 6)


def test_linear_round_trip_of_a_smooth_map_is_close():
    x, y, z = np.meshgrid(np.arange(24), np.arange(20), np.arange(10), indexing="ij")
    image = (200 * np.sin(x / 5.0) + 100 * np.cos(y / 4.0) + 20 * z).astype(np.float32)
    volume = stored_volume(image, affine_for("LPS", (1.0, 1.0, 2.0)))
    cached, _, _, meta = preprocess_volume(volume, "ct", config((0.5, 0.5, 1.0)))
    back, _ = to_original_geometry(cached, meta, order="linear")
    hu = invert_intensity_mapping(back, meta["intensity"])
    assert (
        np.abs(hu - image).max() < 2.0
    )  # float32 arithmetic; the upsampled grid contains every source voxel


def test_label_shape_must_match_the_volume():
    volume = stored_volume(np.zeros((8, 8, 4), np.int16), np.eye(4))
    with pytest.raises(DataError, match="label shape"):
        preprocess_volume(volume, "ct", config(), np.zeros((8, 8, 5), np.uint8))


def test_to_original_geometry_rejects_arrays_on_another_grid():
    image, _ = ct_phantom()
    volume = stored_volume(image, np.eye(4))
    cached, _, _, meta = preprocess_volume(volume, "ct", config())
    with pytest.raises(ValueError, match="not on the cached grid"):
        to_original_geometry(cached[:-1], meta)
