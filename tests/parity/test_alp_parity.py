"""ALP pooling, fusion and the ALPNet losses against ``FewShotSeg.forward`` of DINOv2-ALPNet
(levayz fork: nearest support masks) and SSL-ALPNet (cheng-01037: bilinear), on fixed features:
test-time logits with a large object (local + global prototypes) and a small one (global only),
and the training-time query loss and prototype-alignment loss."""

from __future__ import annotations

import pytest
import torch
from parity_common import TOLERANCE, deterministic_array, max_abs_diff

from voxssl.config.fewshot import FewShotConfig
from voxssl.fewshot.alp import ALPHead, alpnet_loss, segment_logits

RESIZE = {"dinov2": "nearest", "ssl": "bilinear"}


def _head() -> ALPHead:
    alp = FewShotConfig().alp  # the published defaults
    proto_grid = tuple(alp.feature_grid // w for w in alp.train_window)
    return ALPHead(
        alp.train_window,
        alp.eval_window,
        alp.mask_fraction,
        alp.temperature,
        alp.cosine_eps,
        proto_grid,
    )


def _features():
    support = deterministic_array("alp/support_features", (1, 8, 32, 32), -1.0, 1.0)
    query = deterministic_array("alp/query_features", (1, 8, 32, 32), -1.0, 1.0)
    return torch.from_numpy(support), torch.from_numpy(query)


@pytest.mark.parametrize("variant", ["dinov2", "ssl"])
def test_alp_test_time_logits_match_the_reference(fixture, variant):
    ref = fixture(f"alp_{variant}.npz")
    support, query = _features()
    head = _head().eval()
    for name in ("large", "small"):
        label = torch.from_numpy(ref[f"support_{name}"]).to(torch.uint8)[None]
        with torch.no_grad():
            logits = segment_logits(head, support, label, query, (64, 64), 255, RESIZE[variant])
        assert max_abs_diff(logits, ref[f"eval_{name}_logits"]) < TOLERANCE, name


@pytest.mark.parametrize("variant", ["dinov2", "ssl"])
def test_alp_training_losses_match_the_reference(fixture, variant):
    ref = fixture(f"alp_{variant}.npz")
    support, query = _features()
    head = _head().train()
    support_label = torch.from_numpy(ref["support_large"]).to(torch.uint8)[None]
    query_label = torch.from_numpy(ref["query_label"]).to(torch.uint8)[None]
    alp = FewShotConfig().alp
    _, parts, logits = alpnet_loss(
        head,
        support,
        support_label,
        query,
        query_label,
        alp.class_weights,
        alp.align_weight,
        255,
        RESIZE[variant],
        alp.align_weighted,
    )
    assert max_abs_diff(logits, ref["train_logits"]) < TOLERANCE
    assert abs(parts["seg"] - float(ref["train_query_loss"])) < TOLERANCE
    assert abs(parts["align"] - float(ref["train_align_loss"])) < TOLERANCE
