"""ALP against a direct, loop-by-loop implementation of the published formulas."""

from __future__ import annotations

import math

import torch

from voxssl.fewshot.alp import ALPHead, alpnet_loss, class_prototypes


def _cos(a: torch.Tensor, b: torch.Tensor, eps: float) -> float:
    return float((a * b).sum() / (max(float(a.norm()), eps) * max(float(b.norm()), eps)))


def direct_alp(support, fg, query, window, fraction, temperature, eps):
    """Loops over windows, prototypes and pixels; returns (Q, 2, h, w) logits."""
    s, _d, h, w = support.shape
    wy, wx = window
    logits = torch.zeros(query.shape[0], 2, h, w)
    for c, mask in enumerate([1.0 - fg, fg]):
        protos = []
        for i in range(s):
            for y in range(0, h - wy + 1, wy):
                for x in range(0, w - wx + 1, wx):
                    if float(mask[i, y : y + wy, x : x + wx].mean()) > fraction:
                        protos.append(support[i, :, y : y + wy, x : x + wx].mean(dim=(1, 2)))
        masked = sum(support[i] * mask[i] for i in range(s)).sum(dim=(1, 2)) / (
            float(mask.sum()) + 1e-5
        )
        if not protos:
            protos = [masked]
        elif c == 1:
            protos.append(masked)
        for q in range(query.shape[0]):
            for y in range(h):
                for x in range(w):
                    sims = [temperature * _cos(p, query[q, :, y, x], eps) for p in protos]
                    top = max(sims)
                    weights = [math.exp(v - top) for v in sims]
                    total = sum(weights)
                    logits[q, c, y, x] = sum(
                        v * wgt / total for v, wgt in zip(sims, weights, strict=True)
                    )
    return logits


def _head(window=(2, 2)):
    return ALPHead(window, window, 0.95, 20.0, 1e-4)


def test_alp_matches_direct_formula():
    g = torch.Generator().manual_seed(0)
    support = torch.randn(2, 5, 6, 6, generator=g)
    query = torch.randn(1, 5, 6, 6, generator=g)
    fg = torch.zeros(2, 6, 6)
    fg[0, 0:4, 0:4] = 1.0  # four full windows in support 0
    fg[1, 2:5, 1:3] = 1.0  # one full window in support 1, the rest partial
    fg[1, 4, 4] = 0.5
    expected = direct_alp(support, fg, query, (2, 2), 0.95, 20.0, 1e-4)
    got = _head()(support, fg, query)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_small_object_uses_only_the_global_prototype():
    g = torch.Generator().manual_seed(1)
    support = torch.randn(1, 3, 8, 8, generator=g)
    fg = torch.zeros(1, 8, 8)
    fg[0, 3, 3] = 1.0  # smaller than any 4x4 window
    protos = class_prototypes(support, fg, (4, 4), 0.95, with_global=True)
    assert protos.shape == (1, 3)
    torch.testing.assert_close(protos[0], support[0, :, 3, 3] / (1 + 1e-5))
    query = torch.randn(1, 3, 8, 8, generator=g)
    expected = direct_alp(support, fg, query, (4, 4), 0.95, 20.0, 1e-4)
    torch.testing.assert_close(_head((4, 4))(support, fg, query), expected, rtol=1e-4, atol=1e-4)


def test_loss_weights_ignore_and_alignment():
    g = torch.Generator().manual_seed(2)
    head = _head()
    s_feat = torch.randn(1, 4, 8, 8, generator=g, requires_grad=True)
    q_feat = torch.randn(1, 4, 8, 8, generator=g, requires_grad=True)
    label = torch.zeros(1, 16, 16, dtype=torch.uint8)
    label[:, 2:10, 2:10] = 1
    total, parts, logits = alpnet_loss(head, s_feat, label, q_feat, label, (0.05, 1.0), 1.0)
    assert logits.shape == (1, 2, 16, 16)
    assert math.isclose(float(total.detach()), parts["seg"] + parts["align"], rel_tol=1e-5)
    # class weights [0.05, 1]: the weighted mean over pixels by class weight
    ce = torch.nn.functional.cross_entropy(logits.detach(), label.long(), reduction="none")
    w = torch.where(label == 1, 1.0, 0.05).float()
    assert math.isclose(parts["seg"], float((ce * w).sum() / w.sum()), rel_tol=1e-4)
    ignored = label.clone()
    ignored[:, :, :8] = 255
    _, parts_ignored, _ = alpnet_loss(head, s_feat, label, q_feat, ignored, (0.05, 1.0), 0.0)
    keep = ignored != 255
    assert math.isclose(
        parts_ignored["seg"], float((ce * w)[keep].sum() / w[keep].sum()), rel_tol=1e-4
    )
    total.backward()
    assert s_feat.grad is not None and float(s_feat.grad.abs().sum()) > 0
