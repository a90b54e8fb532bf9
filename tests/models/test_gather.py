import pytest
import torch
import torch.nn.functional as F

from voxssl.models.gather import gather_level, gather_voxel_embeddings


def naive_embeddings(pyramid, coords):
    """Upsample every level to full resolution (nearest x 2**i, cropped), then index."""
    full = pyramid[0].shape[2:]
    maps = []
    for i, level in enumerate(pyramid):
        up = F.interpolate(level, scale_factor=2**i, mode="nearest") if i else level
        maps.append(up[(..., *(slice(0, n) for n in full))])
    stacked = torch.cat(maps, dim=1)  # (B, D, *S)
    return torch.stack([stacked[b, :, x, y, z] for b, x, y, z in coords.tolist()])


@pytest.mark.parametrize("shape", [(16, 12, 8), (13, 11, 7)])
def test_gather_matches_upsample_then_index(shape):
    generator = torch.Generator().manual_seed(0)
    levels = 4
    pyramid = [
        torch.randn(3, 2 + i, *(-(-n // 2**i) for n in shape), generator=generator)
        for i in range(levels)
    ]
    coords = torch.stack(
        [torch.randint(0, 3, (200,), generator=generator)]
        + [torch.randint(0, n, (200,), generator=generator) for n in shape],
        dim=1,
    )
    coords[0] = torch.tensor(
        [2, shape[0] - 1, shape[1] - 1, shape[2] - 1]
    )  # the far corner (odd sizes)
    got = gather_voxel_embeddings(pyramid, coords)
    assert got.shape == (200, sum(2 + i for i in range(levels)))
    assert torch.equal(got, naive_embeddings(pyramid, coords))


def test_gather_is_differentiable_and_validates():
    level0 = torch.randn(1, 3, 4, 4, 4, requires_grad=True)
    level1 = torch.randn(1, 5, 2, 2, 2, requires_grad=True)
    coords = torch.tensor([[0, 3, 2, 1]])
    gather_voxel_embeddings([level0, level1], coords).sum().backward()
    assert level0.grad[0, :, 3, 2, 1].eq(1).all() and level0.grad.sum() == 3
    assert level1.grad[0, :, 1, 1, 0].eq(1).all() and level1.grad.sum() == 5
    with pytest.raises(IndexError):
        gather_voxel_embeddings([level0], torch.tensor([[0, 4, 0, 0]]))
    with pytest.raises(IndexError):
        gather_voxel_embeddings([level0], torch.tensor([[1, 0, 0, 0]]))
    with pytest.raises(ValueError, match="coords must be"):
        gather_voxel_embeddings([level0], torch.tensor([[0, 1, 1]]))
    with pytest.raises(ValueError, match="integer"):
        gather_voxel_embeddings([level0], torch.zeros(1, 4))


@pytest.mark.parametrize("ndim", [2, 3])
def test_gather_from_a_channels_last_level_keeps_its_layout_in_the_gradient(ndim):
    """A channels-last level is indexed as (B, *S, C): the same embeddings, and the gradient the
    backward writes into the level is channels-last too (a contiguous one would make every
    convolution backward of that level convert or run its slow path)."""
    layout = torch.channels_last_3d if ndim == 3 else torch.channels_last
    torch.manual_seed(0)
    shape = (2, 5, *([6] * ndim))
    plain = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    last = plain.detach().contiguous(memory_format=layout).requires_grad_()
    coords = torch.cat(
        [torch.randint(0, 2, (9, 1)), torch.randint(0, 6, (9, ndim))], dim=1
    )  # repeats included
    weights = torch.randn(9, 5, dtype=torch.float64)
    a, b = gather_level(plain, coords, 0), gather_level(last, coords, 0)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    (a * weights).sum().backward()
    (b * weights).sum().backward()
    assert last.grad.is_contiguous(memory_format=layout) and not last.grad.is_contiguous()
    assert plain.grad.is_contiguous()
    torch.testing.assert_close(plain.grad, last.grad, rtol=0, atol=0)
