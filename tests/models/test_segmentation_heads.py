"""The linear head is exactly a linear map of the concatenated voxel embedding."""

import torch

from voxssl.models.segmentation_heads import (
    FPNLinearHead,
    FPNNonLinearHead,
    build_head,
    upsample_to,
)


def _pyramid(channels, size, generator):
    levels = []
    for i, c in enumerate(channels):
        shape = [-(-s // 2**i) for s in size]  # ceil-mode pooling sizes
        levels.append(torch.randn(2, c, *shape, generator=generator, dtype=torch.float64))
    return levels


def test_linear_head_equals_linear_map_of_concatenated_embedding():
    g = torch.Generator().manual_seed(0)
    channels, size = [3, 5, 7], (9, 6, 5)  # odd sizes: upsampled coarse levels must be cropped
    pyramid = _pyramid(channels, size, g)
    head = FPNLinearHead(channels, num_classes=4).double()
    for conv in head.level_convs:
        torch.nn.init.normal_(conv.weight, generator=g)
    torch.nn.init.normal_(head.level_convs[0].bias, generator=g)

    embedding = torch.cat(
        [upsample_to(p, i, size) for i, p in enumerate(pyramid)], dim=1
    )  # (B, 15, X, Y, Z)
    weight, bias = head.as_linear_map()
    expected = torch.einsum("kc,bcxyz->bkxyz", weight, embedding) + bias[None, :, None, None, None]

    assert embedding.shape == (2, 15, *size)
    torch.testing.assert_close(head(pyramid), expected, rtol=1e-12, atol=1e-12)


def test_standardised_linear_head_is_still_one_linear_map_in_eval_mode():
    g = torch.Generator().manual_seed(1)
    channels, size = [3, 5, 7], (9, 6, 5)
    head = FPNLinearHead(channels, num_classes=4, feature_norm="batch").double()
    scales = [0.01, 1.0, 30.0]  # random-init vs pretrained features differ by orders of magnitude
    for _ in range(20):  # train mode: the norms learn running statistics from the batches
        head(_pyramid_scaled(channels, size, g, scales))
    head.eval()
    for conv in head.level_convs:
        torch.nn.init.normal_(conv.weight, generator=g)
    torch.nn.init.normal_(head.level_convs[0].bias, generator=g)
    pyramid = _pyramid_scaled(channels, size, g, scales)

    standardized = [
        (p - n.running_mean[None, :, None, None, None])
        / torch.sqrt(n.running_var + n.eps)[None, :, None, None, None]
        for p, n in zip(pyramid, head.level_norms, strict=True)
    ]
    assert all(
        0.3 < s.std().item() < 3.0 for s in standardized
    )  # every level brought to unit scale
    embedding = torch.cat([upsample_to(p, i, size) for i, p in enumerate(pyramid)], dim=1)
    weight, bias = head.as_linear_map()
    expected = torch.einsum("kc,bcxyz->bkxyz", weight, embedding) + bias[None, :, None, None, None]
    torch.testing.assert_close(head(pyramid), expected, rtol=1e-10, atol=1e-10)
    assert not any(
        p.requires_grad for n in head.level_norms for p in n.parameters()
    )  # no affine parameters


def _pyramid_scaled(channels, size, generator, scales):
    return [
        level * scale + scale
        for level, scale in zip(_pyramid(channels, size, generator), scales, strict=True)
    ]


def test_linear_head_bias_only_on_finest_level():
    head = FPNLinearHead([4, 8, 16], num_classes=3)
    assert head.level_convs[0].bias is not None
    assert all(conv.bias is None for conv in head.level_convs[1:])
    assert sum(p.numel() for p in head.parameters()) == 3 * (4 + 8 + 16) + 3


def test_upsample_matches_select_from_pyramid():
    level = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(1, 1, 2, 3, 2)
    up = upsample_to(level, 2, (7, 10, 5))
    for v in [(0, 0, 0), (6, 9, 4), (3, 5, 2)]:
        assert up[0, 0, v[0], v[1], v[2]] == level[0, 0, v[0] // 4, v[1] // 4, v[2] // 4]


def test_nonlinear_head_shapes_and_voxelwise():
    g = torch.Generator().manual_seed(1)
    channels, size = [4, 8], (6, 6, 4)
    pyramid = [p.float() for p in _pyramid(channels, size, g)]
    head = build_head("nonlinear", channels, num_classes=3, hidden=8).eval()
    out = head(pyramid)
    assert out.shape == (2, 3, *size)
    # 1x1x1 convs only: changing level 0 at one voxel changes the logits at that voxel only
    changed = [p.clone() for p in pyramid]
    changed[0][:, :, 2, 3, 1] += 5.0
    diff = (head(changed) - out).abs().sum(dim=(0, 1))
    assert diff[2, 3, 1] > 0 and diff.sum() == diff[2, 3, 1]
    assert isinstance(build_head("linear", channels, 3), FPNLinearHead)
    assert isinstance(head, FPNNonLinearHead)
