import copy

import pytest
import torch

from voxssl.config.model import ModelConfig
from voxssl.models.blocks import PointwiseConv2d, PointwiseConv3d, SmallMapConv3d, conv_layer
from voxssl.models.build import build_backbone, build_pretrain_model, embedding_dim, level_channels
from voxssl.models.fpn import FPN


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(cfg: ModelConfig) -> torch.nn.Module:
    with torch.device("meta"):  # counts without allocating or initialising 47.6 M parameters
        return build_backbone(cfg)


def fpn_parameters(in_channels: int, base: int, levels: int, blocks: int) -> int:
    """The FPN's parameter count from its layout (docs/models.md), written out independently.

    Level i has c_i = base * 2**i channels. A pre-activation residual block holds two BatchNorms
    (2 c each) and two 3x3x3 convolutions (27 c^2 + c each); a stage holds ``blocks`` of them.
    """

    def stage(c: int) -> int:
        return blocks * (2 * 2 * c + 2 * (27 * c * c + c))

    channels = [base * 2**i for i in range(levels)]
    total = 27 * in_channels * base + base  # first 3x3x3 convolution
    for c in channels[:-1]:
        total += stage(c)  # encoder stage
        total += 2 * c * c + 2 * c  # down: 1x1x1 conv c -> 2c
        total += 2 * c * c + c  # up: 1x1x1 conv 2c -> c
        total += c * c + c  # skip: 1x1x1 conv c -> c
        total += stage(c)  # decoder stage
    return total + stage(channels[-1])  # bottom stage


def test_vox2vec_preset_has_47_6_million_parameters():
    backbone = build_on_meta(ModelConfig(preset="vox2vec"))
    expected = fpn_parameters(in_channels=1, base=16, levels=6, blocks=2)
    assert round(expected / 1e6, 1) == 47.6  # vox2vec: "~47.6 M"
    assert count(backbone) == expected
    assert backbone.level_channels == [16, 32, 64, 128, 256, 512] and backbone.embedding_dim == 1008


def test_hierarchical_preset_parameters_and_projection_widths():
    cfg = ModelConfig(preset="hierarchical")
    backbone = build_on_meta(cfg)
    projections = sum(p.numel() for p in backbone.projections.parameters())
    assert projections == sum(c * 32 for c in (32, 64, 128, 256, 512)) + 32  # bias on level 0 only
    assert count(backbone) == fpn_parameters(1, base=32, levels=5, blocks=2) + projections
    frozen = build_on_meta(ModelConfig(preset="hierarchical", projection="frozen_random"))
    assert count(frozen) == count(backbone) - projections
    assert {k for k in frozen.state_dict() if k.startswith("projections")} == {
        k for k in backbone.state_dict() if k.startswith("projections")
    }


def test_key_layout_mirrors_vox2vec():
    keys = set(build_backbone(ModelConfig(preset="vox2vec", base_channels=2)).state_dict())
    for key in (
        "first_conv.weight",
        "left_blocks.0.layers.1.layers.0.running_var",
        "left_blocks.4.layers.0.layers.5.weight",
        "down_blocks.0.1.weight",
        "bottom_block.layers.1.layers.2.weight",
        "up_blocks.0.0.weight",  # deepest decoder stage first
        "skip_blocks.4.weight",
        "right_blocks.4.layers.0.layers.3.weight",
    ):
        assert key in keys, key
    model = build_backbone(ModelConfig(preset="vox2vec", base_channels=2))
    assert model.up_blocks[0][0].in_channels == 64 and model.up_blocks[-1][0].out_channels == 2


@pytest.mark.parametrize("shape", [(16, 16, 8), (13, 10, 5)])
def test_pyramid_shapes_follow_ceil_pooling(shape):
    cfg = ModelConfig(preset="hierarchical", base_channels=4, num_levels=4)
    backbone = build_backbone(cfg).eval()
    x = torch.randn(2, 1, *shape)
    with torch.no_grad():
        features = backbone.forward_features(x)
        pyramid = backbone(x)
    for i, (f, p) in enumerate(zip(features, pyramid, strict=True)):
        expected = tuple(-(-n // 2**i) for n in shape)
        assert f.shape == (2, 4 * 2**i, *expected)
        assert p.shape == (2, level_channels(cfg)[i], *expected)
    assert sum(p.shape[1] for p in pyramid) == embedding_dim(cfg)


def test_frozen_random_projection_is_seeded_untrained_and_reproducible():
    cfg = ModelConfig(
        preset="hierarchical", base_channels=4, num_levels=3, projection="frozen_random"
    )
    a, b = build_backbone(cfg), build_backbone(cfg)
    other = build_backbone(
        ModelConfig(
            preset="hierarchical",
            base_channels=4,
            num_levels=3,
            projection="frozen_random",
            projection_seed=1,
        )
    )
    assert all(not n.startswith("projections") for n, _ in a.named_parameters())
    assert torch.equal(a.projections[1].weight, b.projections[1].weight)
    assert not torch.equal(a.projections[1].weight, other.projections[1].weight)
    assert a.projections[0].bias is not None and a.projections[2].bias is None


def test_gradients_reach_every_parameter_and_dimension_generic_2d():
    model = FPN(
        in_channels=2,
        base_channels=4,
        num_levels=3,
        spatial_dims=2,
        projection="learned",
        projection_channels=8,
        norm=("group", {"num_groups": 2}),
    )
    pyramid = model(torch.randn(2, 2, 11, 9))
    assert [p.shape[1:] for p in pyramid] == [(8, 11, 9), (8, 6, 5), (8, 3, 3)]
    sum(p.square().mean() for p in pyramid).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_wrong_input_channels_raise_a_clear_error():
    model = FPN(in_channels=1, base_channels=2, num_levels=2)
    with pytest.raises(ValueError, match=r"\(B, 1"):
        model(torch.randn(1, 3, 8, 8, 8))


def test_pretrain_model_outputs():
    cfg = ModelConfig(
        preset="hierarchical", base_channels=4, num_levels=3, reconstruction="two_conv"
    )
    model = build_pretrain_model(cfg)
    images = torch.randn(2, 1, 12, 12, 6)
    coords = torch.tensor([[0, 0, 0, 0], [1, 11, 11, 5], [0, 5, 6, 2]])
    out = model(images, coords)
    assert out.embeddings.shape == (3, embedding_dim(cfg))
    assert out.projections.shape == (3, 128)
    assert torch.allclose(out.projections.norm(dim=1), torch.ones(3), atol=1e-5)
    assert out.reconstruction.shape == images.shape
    assert len(out.pyramid) == 3
    assert {k.split(".")[0] for k in model.state_dict()} == {
        "backbone",
        "projector",
        "reconstruction_head",
    }
    assert (
        build_pretrain_model(ModelConfig(preset="vox2vec", base_channels=2)).reconstruction_head
        is None
    )


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_pointwise_convolution_is_the_convolution_in_both_layouts(spatial_dims):
    """conv_layer's 1x1(x1) convolution runs a channels-last map as a matrix product over the
    channels: the convolution's output and gradients (float64: the same sums), its output and
    its input's gradient channels-last; a contiguous map takes the convolution itself."""
    layout = torch.channels_last_3d if spatial_dims == 3 else torch.channels_last
    torch.manual_seed(0)
    pointwise = conv_layer(spatial_dims, 6, 4, kernel_size=1).double()
    assert isinstance(pointwise, PointwiseConv3d if spatial_dims == 3 else PointwiseConv2d)
    conv = copy.deepcopy(pointwise)
    x = torch.randn(3, 6, *([5] * spatial_dims), dtype=torch.float64)
    weights = torch.randn(3, 4, *([5] * spatial_dims), dtype=torch.float64)
    expected_input = x.clone().requires_grad_()
    expected = torch.nn.functional.conv3d if spatial_dims == 3 else torch.nn.functional.conv2d
    reference = expected(expected_input, conv.weight, conv.bias)
    (reference * weights).sum().backward()
    for x_layout in (torch.contiguous_format, layout):
        pointwise.zero_grad()
        inp = x.clone(memory_format=x_layout).requires_grad_()
        out = pointwise(inp)
        (out * weights).sum().backward()
        torch.testing.assert_close(out, reference, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(inp.grad, expected_input.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(pointwise.weight.grad, conv.weight.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(pointwise.bias.grad, conv.bias.grad, rtol=1e-12, atol=1e-12)
        channels_last = x_layout is layout
        assert out.is_contiguous(memory_format=layout) == channels_last
        assert inp.grad.is_contiguous(memory_format=layout) == channels_last
    assert list(pointwise.state_dict()) == ["weight", "bias"]  # a Conv's keys and shapes


def test_small_map_convolution_is_the_convolution():
    """conv_layer's 3x3x3 convolution computes a small CPU map (output voxels of the batch x 8 <=
    out_channels: the deepest levels of the 512-channel presets) as patches @ weight: float64
    output and gradients equal ``F.conv3d``'s, odd shapes and one-voxel maps included; larger
    maps take the convolution itself."""
    torch.manual_seed(1)
    conv = conv_layer(3, 6, 48, kernel_size=3).double()
    assert isinstance(conv, SmallMapConv3d)
    for shape in [(2, 6, 2, 1, 1), (1, 6, 1, 1, 1), (1, 6, 3, 2, 1), (1, 6, 1, 2, 3)]:
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        assert conv.uses_patches(x)
        out = conv(x)
        expected_x = x.detach().clone().requires_grad_()
        expected = torch.nn.functional.conv3d(expected_x, conv.weight, conv.bias, padding=1)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        assert out.is_contiguous()
        weights = torch.randn(expected.shape, dtype=torch.float64)
        got = torch.autograd.grad((out * weights).sum(), [x, conv.weight, conv.bias])
        want = torch.autograd.grad((expected * weights).sum(), [expected_x, conv.weight, conv.bias])
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert not conv.uses_patches(torch.zeros(1, 6, 2, 2, 2))  # 8 voxels x 8 > 48 channels
    vox2vec = build_backbone(ModelConfig(preset="vox2vec"))
    deepest = vox2vec.bottom_block.layers[0].layers[2]
    assert deepest.uses_patches(torch.zeros(2, 512, 2, 2, 1))  # 64x64x32 crops, 2 views
    assert (
        not vox2vec.right_blocks[0].layers[0].layers[2].uses_patches(torch.zeros(2, 256, 4, 4, 2))
    )
