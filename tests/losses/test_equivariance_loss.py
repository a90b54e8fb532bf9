import pytest
import torch
import torch.nn.functional as F
from torch import nn

from voxssl.losses.equivariance import EquivarianceLoss, equivariance_alignment
from voxssl.losses.infonce import InfoNCELoss
from voxssl.models.gather import gather_voxel_embeddings
from voxssl.transforms.spatial import GridTransform, RandomGridTransform

SHAPE = (8, 8, 4)


class PointwiseNet(nn.Module):
    """1x1x1 convolutions (+ average pooling for the coarse levels): equivariant to flips/rot90."""

    def __init__(self, coordinate_channel: bool = False, levels: int = 2) -> None:
        super().__init__()
        self.coordinate_channel = coordinate_channel
        self.net = nn.Sequential(
            nn.Conv3d(2 if coordinate_channel else 1, 32, 1), nn.ReLU(), nn.Conv3d(32, 32, 1)
        )
        self.levels = levels

    def forward(self, x):
        if self.coordinate_channel:  # a position-dependent input: breaks equivariance
            ramp = torch.linspace(-3, 3, x.shape[2]).view(1, 1, -1, 1, 1).expand_as(x)
            x = torch.cat([x, ramp], dim=1)
        level0 = self.net(x)
        return [level0] + [F.avg_pool3d(level0, 2**i) for i in range(1, self.levels)]


def sampled_positions(generator, batch, n):
    return torch.stack(
        [torch.randint(0, batch, (n,), generator=generator)]
        + [torch.randint(0, s, (n,), generator=generator) for s in SHAPE],
        dim=1,
    )


@pytest.mark.parametrize("zoom", [False, True])
def test_zero_alignment_error_for_an_equivariant_map_and_positive_for_a_non_equivariant_one(zoom):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, *SHAPE, generator=generator)
    if zoom:  # pooling is not scale-equivariant: compare the full-resolution level only
        transform = GridTransform(
            SHAPE, zoom=2, zoom_offset=(2, 5, 3), flip_axes=(1,), quarter_turns=1
        )
        levels = 1
    else:
        transform = GridTransform(SHAPE, flip_axes=(0, 2), quarter_turns=3)
        levels = 2
    positions = sampled_positions(generator, 2, 48)
    loss = EquivarianceLoss(temperature=0.1)
    with torch.no_grad():
        equivariant = PointwiseNet(levels=levels)
        pyramid, transformed = equivariant(x), equivariant(transform.apply_image(x))
        value = loss(transformed, pyramid, transform, positions)
        embeddings = gather_voxel_embeddings(transformed, positions)
        lower_bound = InfoNCELoss(0.1)(embeddings, embeddings)  # identical positives
        assert equivariance_alignment(transformed, pyramid, transform, positions) < 1e-6
        assert value.item() == pytest.approx(lower_bound.item(), abs=1e-4)

        biased = PointwiseNet(coordinate_channel=True, levels=levels)
        pyramid, transformed = biased(x), biased(transform.apply_image(x))
        assert equivariance_alignment(transformed, pyramid, transform, positions) > 1e-2
        assert loss(transformed, pyramid, transform, positions).item() > value.item() + 0.05


def test_per_item_transforms_projector_and_gradients():
    generator = torch.Generator().manual_seed(3)
    sampler = RandomGridTransform(flip_prob=0.5, zoom_prob=0.0)
    transforms = [sampler.randomize(SHAPE, generator) for _ in range(2)]
    x = torch.randn(2, 1, *SHAPE, generator=generator)
    transformed_input = torch.stack([t.apply_image(x[b]) for b, t in enumerate(transforms)])
    net = PointwiseNet(levels=1)
    projector = nn.Linear(32, 16)
    loss_fn = EquivarianceLoss(temperature=0.5, projector=projector)
    assert any(name.startswith("projector") for name, _ in loss_fn.named_parameters())
    positions = sampled_positions(generator, 2, 32)
    loss = loss_fn(net(transformed_input), net(x), transforms, positions)
    loss.backward()
    assert torch.isfinite(loss) and projector.weight.grad is not None
    assert all(p.grad is not None for p in net.parameters())
    with torch.no_grad():
        assert equivariance_alignment(net(transformed_input), net(x), transforms, positions) < 1e-6


@pytest.mark.parametrize("projector_mode", ["shared", "none"])
def test_objective_contrasts_equivariance_through_the_shared_projector(projector_mode):
    """``equivariance.projector: shared`` routes the term through the InfoNCE projector (Pix2Rep
    contrasts projected features); ``none`` leaves the projector out of it."""
    from voxssl.config.pretrain import EquivarianceConfig, PretrainConfig
    from voxssl.train.objective import PretrainObjective

    cfg = PretrainConfig(
        infonce_weight=0.0,
        reconstruction_weight=0.0,
        equivariance=EquivarianceConfig(weight=1.0, projector=projector_mode),
    )
    generator = torch.Generator().manual_seed(5)
    transform = RandomGridTransform(flip_prob=0.5, zoom_prob=0.0).randomize(SHAPE, generator)
    x = torch.randn(1, 1, *SHAPE, generator=generator)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = PointwiseNet(levels=1)
            self.projector = nn.Linear(32, 16)

        def forward(self, images, coords=None):
            from voxssl.models.pretrain import PretrainOutput

            if isinstance(images, list):  # several views, as PretrainModel takes them
                return [self(view) for view in images]
            return PretrainOutput(self.net(images), None, None, None)

    model = Model()
    positions = torch.stack(
        [torch.randint(0, s, (24,), generator=generator) for s in SHAPE], dim=1
    )[None]
    batch = {
        "view1": x,
        "view2": x,
        "valid": torch.ones(1, 24, dtype=torch.bool),
        "positions1": positions,
        "positions2": positions,
        "view3": transform.apply_image(x[0])[None],
        "positions3": transform.map_points(positions[0], SHAPE)[None],
        "valid3": torch.ones(1, 24, dtype=torch.bool),
        "transforms": [transform],
    }
    PretrainObjective(cfg)(model, batch).loss.backward()
    assert all(p.grad is not None for p in model.net.parameters())
    assert (model.projector.weight.grad is not None) == (projector_mode == "shared")
