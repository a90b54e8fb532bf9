import pytest
import torch

from voxssl.losses.reconstruction import ReconstructionLoss


def test_mse_without_and_with_mask():
    prediction = torch.zeros(2, 1, 4, 4, 2)
    target = torch.ones(2, 1, 4, 4, 2)
    target[0] = 3.0
    loss = ReconstructionLoss()
    assert loss(prediction, target).item() == pytest.approx((9 + 1) / 2)
    mask = torch.zeros(2, 4, 4, 2, dtype=torch.bool)
    mask[1] = True
    assert loss(prediction, target, mask).item() == pytest.approx(1.0)
    mask[0, 0, 0, 0] = True  # one voxel of the first item: (9 + 32 * 1) / 33
    assert loss(prediction, target, mask.unsqueeze(1)).item() == pytest.approx(41 / 33)


def test_empty_mask_gives_zero_with_a_graph_and_shapes_are_checked():
    prediction = torch.randn(1, 2, 3, 3, 3, requires_grad=True)
    value = ReconstructionLoss()(prediction, torch.zeros(1, 2, 3, 3, 3), torch.zeros(1, 1, 3, 3, 3))
    value.backward()
    assert value.item() == 0.0 and prediction.grad is not None
    with pytest.raises(ValueError):
        ReconstructionLoss()(prediction, torch.zeros(1, 1, 3, 3, 3))
    with pytest.raises(ValueError):
        ReconstructionLoss()(prediction, torch.zeros(1, 2, 3, 3, 3), torch.ones(1, 1, 3, 3, 2))
