"""vox2vec's FPN3d (layer layout, ceil-mode pooling, odd sizes), FPNLinearHead and
FPNNonLinearHead against voxssl's FPN, FPNLinearHead and Vox2VecNonLinearHead."""

from __future__ import annotations

import torch
from parity_common import TOLERANCE, checksum, filled_state, max_abs_diff

from voxssl.models.fpn import FPN
from voxssl.models.segmentation_heads import FPNLinearHead, Vox2VecNonLinearHead


def _fpn() -> FPN:
    fpn = FPN(in_channels=1, base_channels=4, num_levels=3)
    fpn.load_state_dict(filled_state(fpn.state_dict()))
    return fpn


def test_fpn_forward_matches_vox2vec_in_eval_and_train_mode(fixture):
    ref = fixture("vox2vec_fpn.npz")
    fpn = _fpn()
    assert abs(checksum(fpn.state_dict()) - float(ref["checksum_fpn"])) < 1e-3  # same weights
    x = torch.from_numpy(ref["x"])
    fpn.eval()
    with torch.no_grad():
        levels = fpn(x)
    assert [tuple(lv.shape) for lv in levels] == [ref[f"eval_level{i}"].shape for i in range(3)]
    diffs = [max_abs_diff(lv, ref[f"eval_level{i}"]) for i, lv in enumerate(levels)]
    assert max(diffs) < TOLERANCE, diffs
    fpn.train()
    with torch.no_grad():
        levels = fpn(x)
    diffs = [max_abs_diff(lv, ref[f"train_level{i}"]) for i, lv in enumerate(levels)]
    assert max(diffs) < TOLERANCE, diffs


def test_linear_and_nonlinear_heads_match_vox2vec(fixture):
    ref = fixture("vox2vec_fpn.npz")
    pyramid = [torch.from_numpy(ref[f"eval_level{i}"]) for i in range(3)]
    linear = FPNLinearHead([4, 8, 16], 5)
    linear.load_state_dict(filled_state(linear.state_dict()))
    with torch.no_grad():
        assert max_abs_diff(linear(pyramid), ref["linear_logits"]) < TOLERANCE
    nonlinear = Vox2VecNonLinearHead([4, 8, 16], 5)
    nonlinear.load_state_dict(filled_state(nonlinear.state_dict()))  # the reference's key names
    assert abs(checksum(nonlinear.state_dict()) - float(ref["checksum_nonlinear"])) < 1e-3
    nonlinear.eval()
    with torch.no_grad():
        assert max_abs_diff(nonlinear(pyramid), ref["nonlinear_logits"]) < TOLERANCE
