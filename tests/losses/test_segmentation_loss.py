"""The downstream SegmentationLoss against a naive per-voxel reference written here.

The reference loops over samples, voxels and organs in plain Python floats (math.log, math.exp), so
it shares nothing with the vectorised implementation but the documented rules:

* a voxel counts when it is annotated (target != 255) and inside the voxel mask (body);
* organ k counts for sample b only when ``channel_mask[b, k]`` (partial labels);
* ``bce``: mean BCE over the counted (voxel, organ) pairs;
  ``ce``: mean cross-entropy over counted voxels, where a partially annotated sample's background
  voxels do not count (they may hide an unannotated organ);
* soft Dice per organ, pooled over the batch: 1 - (2 sum(p y) + 1e-5) / (sum(p) + sum(y) + 1e-5)
  over the counted voxels, averaged over organs, added with ``dice_weight``.
"""

from __future__ import annotations

import math

import pytest
import torch

from voxssl.losses.segmentation import SegmentationLoss
from voxssl.vocabulary import IGNORE_INDEX

SMOOTH = 1e-5  # MONAI DiceLoss smooth_nr = smooth_dr


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def naive_loss(kind, dice_weight, logits, target, voxel_mask, channel_mask) -> float:
    batch, channels = logits.shape[:2]
    organs = channel_mask.shape[1]
    voxels = [
        (x, y, z)
        for x in range(logits.shape[2])
        for y in range(logits.shape[3])
        for z in range(logits.shape[4])
    ]
    data_sum, data_count = 0.0, 0
    inter = [0.0] * organs
    prob_sum = [0.0] * organs
    true_sum = [0.0] * organs
    for b in range(batch):
        partial = not all(bool(channel_mask[b, k]) for k in range(organs))
        for v in voxels:
            t = int(target[(b, *v)])
            counted = bool(voxel_mask[(b, *v)]) and t != IGNORE_INDEX
            values = [float(logits[(b, c, *v)]) for c in range(channels)]
            probs = _softmax(values)
            organ_prob = [_sigmoid(x) for x in values] if kind == "bce" else probs[1:]
            for k in range(organs):
                if not (counted and bool(channel_mask[b, k])):
                    continue
                y = 1.0 if t == k + 1 else 0.0
                if kind == "bce":
                    p = organ_prob[k]
                    data_sum += -(y * math.log(p) + (1 - y) * math.log(1 - p))
                    data_count += 1
                inter[k] += organ_prob[k] * y
                prob_sum[k] += organ_prob[k]
                true_sum[k] += y
            if kind == "ce" and counted and not (partial and t == 0):
                data_sum += -math.log(probs[t])
                data_count += 1
    data = data_sum / max(data_count, 1)
    dice = [
        1 - (2 * inter[k] + SMOOTH) / (prob_sum[k] + true_sum[k] + SMOOTH) for k in range(organs)
    ]
    return data + dice_weight * sum(dice) / organs


def _case(kind: str, seed: int):
    """Two samples of 4x3x2 voxels, 3 organs; ignored voxels, a body mask, sample 1 partial."""
    generator = torch.Generator().manual_seed(seed)
    organs = 3
    channels = organs if kind == "bce" else organs + 1
    logits = torch.randn(2, channels, 4, 3, 2, generator=generator) * 2
    target = torch.randint(0, organs + 1, (2, 4, 3, 2), generator=generator)
    target[0, 0, 0, :] = IGNORE_INDEX
    target[1, 3, 2, 1] = IGNORE_INDEX
    voxel_mask = torch.rand(2, 4, 3, 2, generator=generator) > 0.25
    channel_mask = torch.tensor([[True, True, True], [True, False, True]])
    target[1][target[1] == 2] = (
        0  # organ 1 (id 2) is not annotated in sample 1: it reads background
    )
    return logits, target, voxel_mask, channel_mask


@pytest.mark.parametrize("kind", ["bce", "ce"])
@pytest.mark.parametrize("dice_weight", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_naive_per_voxel_reference(kind, dice_weight, seed):
    logits, target, voxel_mask, channel_mask = _case(kind, seed)
    loss = SegmentationLoss(kind, dice_weight)(logits, target, voxel_mask, channel_mask)
    expected = naive_loss(kind, dice_weight, logits, target, voxel_mask, channel_mask)
    assert float(loss) == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("kind", ["bce", "ce"])
def test_uncounted_voxels_and_organs_do_not_change_the_loss_or_get_gradients(kind):
    logits, target, voxel_mask, channel_mask = _case(kind, 2)
    logits.requires_grad_(True)
    criterion = SegmentationLoss(kind, 1.0)
    loss = criterion(logits, target, voxel_mask, channel_mask)
    loss.backward()
    outside = ~voxel_mask | (target == IGNORE_INDEX)  # (B, X, Y, Z)
    assert torch.all(logits.grad.permute(0, 2, 3, 4, 1)[outside] == 0)
    if kind == "bce":  # an unannotated organ channel of sample 1 learns nothing anywhere
        assert torch.all(logits.grad[1, 1] == 0)
    changed = logits.detach().clone()
    changed.permute(0, 2, 3, 4, 1)[outside] = 50.0
    assert float(criterion(changed, target, voxel_mask, channel_mask)) == pytest.approx(
        float(loss.detach())
    )


def test_ce_with_nothing_counted_is_zero_with_a_gradient_graph():
    logits = torch.randn(1, 3, 2, 2, 2, requires_grad=True)
    target = torch.full((1, 2, 2, 2), IGNORE_INDEX)
    loss = SegmentationLoss("ce", 0.0)(
        logits, target, torch.ones(1, 2, 2, 2, dtype=torch.bool), torch.ones(1, 2, dtype=torch.bool)
    )
    loss.backward()
    assert float(loss) == 0.0 and torch.all(logits.grad == 0)


def test_rejects_unknown_kind_and_negative_dice_weight():
    with pytest.raises(ValueError, match="'bce' or 'ce'"):
        SegmentationLoss("focal")
    with pytest.raises(ValueError, match="dice_weight"):
        SegmentationLoss("bce", -1.0)
