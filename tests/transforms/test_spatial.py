import itertools

import numpy as np
import pytest
import torch

from voxssl.models.gather import gather_voxel_embeddings
from voxssl.transforms.spatial import GridTransform, RandomGridTransform

SHAPE = (8, 8, 4)


def all_voxels(shape):
    return np.array(list(itertools.product(*(range(n) for n in shape))), dtype=np.int64)


def name(t: GridTransform) -> str:
    return f"zoom{t.zoom}@{t.zoom_offset}-flip{t.flip_axes}-rot{t.quarter_turns}"


def example_transforms(shape=SHAPE):
    yield GridTransform(shape)
    for axes in ((0,), (1,), (2,), (0, 1, 2)):
        yield GridTransform(shape, flip_axes=axes)
    for turns in (1, 2, 3):
        yield GridTransform(shape, quarter_turns=turns)
        yield GridTransform(shape, flip_axes=(0, 2), quarter_turns=turns)
    yield GridTransform(shape, zoom=2, zoom_offset=(3, 8, 1))
    yield GridTransform(shape, zoom=3, zoom_offset=(16, 5, 8), flip_axes=(1,), quarter_turns=1)


@pytest.mark.parametrize("transform", list(example_transforms()), ids=name)
def test_image_and_coordinates_agree(transform):
    image = torch.arange(2 * np.prod(SHAPE)).reshape(2, 1, *SHAPE)  # unique values
    out = transform.apply_image(image)
    assert out.shape[2:] == transform.output_shape()
    outputs = all_voxels(out.shape[2:])
    sources = transform.source_points(outputs)
    for b in range(2):
        assert torch.equal(out[b, 0][tuple(outputs.T)], image[b, 0][tuple(sources.T)])
    # forward map: every input voxel that stays inside lands where it is copied
    inputs = all_voxels(SHAPE)
    mapped = transform.map_points(inputs, SHAPE)
    keep = transform.inside(mapped)
    assert keep.any() and (keep.all() or transform.zoom > 1)
    assert torch.equal(out[0, 0][tuple(mapped[keep].T)], image[0, 0][tuple(inputs[keep].T)])
    # numpy images and torch points give the same results
    np.testing.assert_array_equal(transform.apply_image(image.numpy()), out.numpy())
    batch_points = torch.from_numpy(
        np.concatenate([np.ones((len(outputs), 1), np.int64), outputs], 1)
    )
    assert torch.equal(transform.source_points(batch_points)[:, 1:], torch.from_numpy(sources))
    assert torch.equal(transform.source_points(batch_points)[:, 0], batch_points[:, 0])


EXACT_ON_3_LEVELS = [
    t for t in example_transforms((16, 16, 8)) if all(o % 4 == 0 for o in t.zoom_offset)
] + [GridTransform((16, 16, 8), zoom=2, zoom_offset=(4, 12, 8), quarter_turns=1)]


@pytest.mark.parametrize("transform", EXACT_ON_3_LEVELS, ids=name)
def test_feature_maps_at_every_level_agree_with_coordinates(transform):
    shape = (16, 16, 8)
    levels = 3
    pyramid = [torch.randn(2, 3, *(n // 2**i for n in shape)) for i in range(levels)]
    transformed = transform.apply_pyramid(pyramid)
    outputs = all_voxels(transform.output_shape())
    positions = torch.from_numpy(
        np.concatenate([np.zeros((len(outputs), 1), np.int64), outputs], 1)
    )
    positions = torch.cat([positions, positions + torch.tensor([1, 0, 0, 0])])
    # T(f)(p) == f(T^-1(p)) on every level: what the equivariance loss relies on
    assert torch.equal(
        gather_voxel_embeddings(transformed, positions),
        gather_voxel_embeddings(pyramid, transform.source_points(positions)),
    )


def test_inexact_feature_transforms_are_refused():
    odd = GridTransform((10, 8, 4), flip_axes=(0,))
    odd.apply_features(torch.zeros(1, 1, 5, 4, 2), level=1)  # 10 is even: fine at level 1
    with pytest.raises(ValueError, match="not exact at level 2"):
        odd.apply_features(torch.zeros(1, 1, 3, 2, 1), level=2)
    offset = GridTransform(SHAPE, zoom=2, zoom_offset=(2, 0, 0))
    with pytest.raises(ValueError, match="multiple of 2\\*\\*2"):
        offset.apply_features(torch.zeros(1, 1, 2, 2, 1), level=2)
    with pytest.raises(ValueError, match="spatial shape"):
        offset.apply_image(torch.zeros(1, 1, 8, 8, 5))
    with pytest.raises(ValueError, match="positive integer"):
        GridTransform(SHAPE, zoom=1.5)
    with pytest.raises(ValueError, match="leaves the zoomed grid"):
        GridTransform(SHAPE, zoom=2, zoom_offset=(9, 0, 0))


@pytest.mark.parametrize(
    "make_generator",
    [lambda s: np.random.default_rng(s), lambda s: torch.Generator().manual_seed(s)],
)
def test_random_transforms_are_reproducible_and_respect_options(make_generator):
    sampler = RandomGridTransform(
        flip_prob=0.5, zoom_prob=0.5, zoom_factors=(2, 3), offset_multiple=4
    )
    first = [sampler.randomize((16, 16, 8), make_generator(7)) for _ in range(3)]
    assert first[0] == first[1] == first[2]
    drawn = [sampler((make_generator(seed)), (16, 16, 8)) for seed in range(60)]
    assert len({(t.flip_axes, t.quarter_turns, t.zoom) for t in drawn}) > 10
    assert {t.zoom for t in drawn} == {1, 2, 3}
    assert all(o % 4 == 0 for t in drawn for o in t.zoom_offset)
    assert {t.quarter_turns for t in drawn} == {0, 1, 2, 3}
    non_square = [sampler.randomize((16, 12, 8), make_generator(seed)) for seed in range(30)]
    assert {t.quarter_turns for t in non_square} <= {0, 2}
    assert all(t.output_shape() == (16, 12, 8) for t in non_square)
    assert sampler.transform == non_square[-1]


def test_dictionary_wrapper_moves_image_and_label_together():
    from voxssl.transforms.spatial import RandomGridTransformd

    image = np.random.default_rng(0).random((1, *SHAPE)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    wrapper = RandomGridTransformd(
        ("image", "label"), RandomGridTransform(flip_prob=1.0, rotation_turns=(1,))
    )
    out = wrapper({"image": image, "label": label, "case_id": "x"}, np.random.default_rng(1))
    transform = out["grid_transform"]
    assert (
        transform.flip_axes == (0, 1, 2) and transform.quarter_turns == 1 and out["case_id"] == "x"
    )
    np.testing.assert_array_equal(out["label"], (out["image"] > 0.5).astype(np.uint8))
    np.testing.assert_array_equal(out["image"], transform.apply_image(image))
    with pytest.raises(KeyError, match="'label'"):
        wrapper({"image": image}, np.random.default_rng(1))
