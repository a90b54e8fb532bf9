"""DINO, iBOT and KoLeo losses and the teacher targets against naive references written here
(loops over crops, images, patches and prototypes, in float64) and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from voxssl.losses.dino_clstoken import DINOClsTokenLoss
from voxssl.losses.dino_targets import EMACenter, sinkhorn_knopp
from voxssl.losses.ibot_patch import IBOTPatchLoss
from voxssl.losses.koleo import KoLeoLoss


def _log_softmax(row: list[float], temperature: float) -> list[float]:
    scaled = [v / temperature for v in row]
    top = max(scaled)
    log_sum = top + math.log(sum(math.exp(v - top) for v in scaled))
    return [v - log_sum for v in scaled]


def _cross_entropy(target: list[float], scores: list[float], temperature: float) -> float:
    return -sum(p * q for p, q in zip(target, _log_softmax(scores, temperature), strict=True))


def _naive_dino(student_global, student_local, teacher, temperature):
    """Every (student crop, teacher crop) pair of different crops, averaged over the images."""
    g, b, _ = teacher.shape
    crops = [("global", v) for v in range(g)] + [("local", v) for v in range(len(student_local))]
    pairs, local_sum, global_sum = 0, 0.0, 0.0
    for kind, v in crops:
        for t in range(g):
            if kind == "global" and v == t:
                continue
            pairs += 1
            scores = student_global[v] if kind == "global" else student_local[v]
            mean = (
                sum(
                    _cross_entropy(teacher[t][i].tolist(), scores[i].tolist(), temperature)
                    for i in range(b)
                )
                / b
            )
            if kind == "global":
                global_sum += mean
            else:
                local_sum += mean
    return local_sum / pairs, global_sum / pairs


def _distributions(shape, generator):
    return torch.softmax(torch.randn(*shape, generator=generator, dtype=torch.float64) * 3, dim=-1)


def test_dino_loss_matches_the_pairwise_loops():
    gen = torch.Generator().manual_seed(0)
    student_global = torch.randn(2, 3, 7, generator=gen, dtype=torch.float64)
    student_local = torch.randn(4, 3, 7, generator=gen, dtype=torch.float64)
    teacher = _distributions((2, 3, 7), gen)
    local, global_ = DINOClsTokenLoss(0.1)(student_global, student_local, teacher)
    ref_local, ref_global = _naive_dino(student_global, student_local, teacher, 0.1)
    assert local.item() == pytest.approx(ref_local, rel=1e-6)
    assert global_.item() == pytest.approx(ref_global, rel=1e-6)


def test_dino_loss_without_local_crops_and_its_gradient():
    gen = torch.Generator().manual_seed(1)
    student = torch.randn(2, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    teacher = _distributions((2, 4, 5), gen)
    local, global_ = DINOClsTokenLoss(0.2)(student, None, teacher)
    assert local.item() == 0.0
    (global_).backward()
    # d/ds of mean_b H(p, softmax(s / tau)) = (softmax(s / tau) - p) / (tau B), one teacher per crop
    expected = torch.empty_like(student)
    for v, t in ((0, 1), (1, 0)):
        expected[v] = (torch.softmax(student[v].detach() / 0.2, -1) - teacher[t]) / (0.2 * 4) / 2
    torch.testing.assert_close(student.grad, expected, rtol=1e-5, atol=1e-7)


def test_dino_loss_of_uniform_scores_is_log_k():
    """Equal scores give log softmax = -log K for every prototype, whatever the targets."""
    gen = torch.Generator().manual_seed(2)
    k = 11
    loss = sum(
        DINOClsTokenLoss(0.1)(
            torch.zeros(2, 5, k), torch.zeros(3, 5, k), _distributions((2, 5, k), gen).float()
        )
    )
    assert loss.item() == pytest.approx(math.log(k), rel=1e-6)


def test_ema_center_follows_the_closed_form():
    gen = torch.Generator().manual_seed(3)
    center, m = EMACenter(6, momentum=0.9), 0.9
    batches = [torch.randn(5, 6, generator=gen) for _ in range(4)]
    for batch in batches:
        center.update(batch)
    # c_n = sum_i (1 - m) m^(n-1-i) mean(batch_i), starting from zero
    expected = sum((1 - m) * m ** (3 - i) * b.double().mean(0) for i, b in enumerate(batches))
    torch.testing.assert_close(center.center[0].double(), expected, rtol=1e-6, atol=1e-7)
    # centering + sharpening: softmax((t - c) / tau), element by element
    scores = torch.randn(2, 6, generator=gen)
    out = center.softmax(scores, 0.04)
    for i in range(2):
        shifted = [(scores[i, k] - center.center[0, k]).item() / 0.04 for k in range(6)]
        top = max(shifted)
        norm = sum(math.exp(v - top) for v in shifted)
        for k in range(6):
            assert out[i, k].item() == pytest.approx(math.exp(shifted[k] - top) / norm, rel=1e-5)


def _naive_sinkhorn(scores: np.ndarray, temperature: float, iterations: int) -> np.ndarray:
    """SwAV's algorithm written out with loops: Q (K, B) = exp(t / tau)^T, total mass 1, then
    alternately rows to 1/K each and columns to 1/B each; columns finally scaled to sum 1."""
    n, k = scores.shape
    q = [[math.exp(scores[b, p] / temperature) for b in range(n)] for p in range(k)]
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(iterations):
        for p in range(k):
            row_sum = sum(q[p])
            q[p] = [v / row_sum / k for v in q[p]]
        for b in range(n):
            col_sum = sum(q[p][b] for p in range(k))
            for p in range(k):
                q[p][b] = q[p][b] / col_sum / n
    return np.array([[q[p][b] * n for p in range(k)] for b in range(n)])


def test_sinkhorn_knopp_matches_the_loops_and_balances_prototypes():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(9, 5, generator=gen) * 0.5
    out = sinkhorn_knopp(scores, temperature=0.1, iterations=3)
    reference = _naive_sinkhorn(scores.double().numpy(), 0.1, 3)
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(out.sum(1).numpy(), 1.0, rtol=1e-5)  # one distribution per sample
    # after many iterations every prototype receives B / K samples' worth of mass
    balanced = sinkhorn_knopp(scores, temperature=0.1, iterations=200)
    np.testing.assert_allclose(balanced.sum(0).numpy(), 9 / 5, rtol=1e-3)


def test_sinkhorn_knopp_is_safe_with_large_scores():
    """exp(60 / 0.04) overflows float32; subtracting the maximum first gives the same plan."""
    scores = torch.tensor([[60.0, 59.9], [59.9, 60.0], [60.0, 60.0]])
    out = sinkhorn_knopp(scores, temperature=0.04)
    reference = _naive_sinkhorn(scores.double().numpy() - 60.0, 0.04, 3)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out.numpy(), reference, rtol=1e-4)


def _naive_ibot(student, teacher, masks, temperature):
    images, patches = masks.shape
    total, row = 0.0, 0
    for i in range(images):
        chosen = [j for j in range(patches) if masks[i, j]]
        image_sum = 0.0
        for _ in chosen:
            image_sum += _cross_entropy(teacher[row].tolist(), student[row].tolist(), temperature)
            row += 1
        if chosen:
            total += image_sum / len(chosen)
    return total / images


def test_ibot_loss_matches_the_loops():
    gen = torch.Generator().manual_seed(5)
    masks = torch.rand(4, 9, generator=gen) < 0.4
    masks[2] = False  # an image without a mask still counts in the mean
    m = int(masks.sum())
    student = torch.randn(m, 6, generator=gen, dtype=torch.float64)
    teacher = _distributions((m, 6), gen)
    loss = IBOTPatchLoss(0.1)(student, teacher, masks)
    assert loss.item() == pytest.approx(_naive_ibot(student, teacher, masks, 0.1), rel=1e-6)
    with pytest.raises(ValueError, match="masked patches"):
        IBOTPatchLoss()(student[:-1], teacher[:-1], masks)


def _naive_koleo(x: np.ndarray, eps: float = 1e-8) -> float:
    unit = [v / max(np.sqrt((v**2).sum()), eps) for v in x]
    total = 0.0
    for i, a in enumerate(unit):
        nearest = min(
            (j for j in range(len(unit)) if j != i), key=lambda j: ((a - unit[j]) ** 2).sum()
        )
        total += -math.log(math.sqrt(((a - unit[nearest] + eps) ** 2).sum()) + eps)
    return total / len(unit)


def test_koleo_matches_the_loops_and_the_polygon_closed_form():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(7, 4, generator=gen) * 3
    assert KoLeoLoss()(x).item() == pytest.approx(_naive_koleo(x.double().numpy()), rel=1e-5)
    # N points evenly on the unit circle: every nearest neighbour is 2 sin(pi / N) away
    n = 8
    angles = torch.arange(n) * 2 * math.pi / n
    circle = torch.stack([angles.cos(), angles.sin()], 1) * 5.0  # the norm does not matter
    assert KoLeoLoss()(circle).item() == pytest.approx(
        -math.log(2 * math.sin(math.pi / n)), rel=1e-5
    )


def test_koleo_gradient_pushes_neighbours_apart():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [-1.0, 0.0]], requires_grad=True)
    before = KoLeoLoss()(x)
    before.backward()
    with torch.no_grad():
        after = KoLeoLoss()(x - 0.05 * x.grad)
    assert after < before
