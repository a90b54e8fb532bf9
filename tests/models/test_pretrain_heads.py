import torch

from voxssl.models.pretrain_heads import ProjectionHead, ReconstructionHead


def test_projection_head_layout_and_normalisation():
    head = ProjectionHead(160, 160, 128)
    linears = [m for m in head.layers if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (160, 160),
        (160, 160),
        (160, 128),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.layers) == 2
    out = head(torch.randn(32, 160))
    assert out.shape == (32, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(32), atol=1e-5)


def test_reconstruction_heads():
    x = torch.randn(2, 8, 6, 6, 4)
    one = ReconstructionHead(8, 1, "conv1x1")
    assert sum(p.numel() for p in one.parameters()) == 9
    assert one(x).shape == (2, 1, 6, 6, 4)
    two = ReconstructionHead(8, 1, "two_conv")
    convs = [m for m in two.layers if isinstance(m, torch.nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (8, 4, (3, 3, 3)),
        (4, 1, (1, 1, 1)),
    ]
    assert two(x).shape == (2, 1, 6, 6, 4)
