"""One pretraining step of hierarchical-dense-ssl's ``Vox2Vec`` module (FPN, per-level projections,
projector, InfoNCE over all sampled voxels of both views, 1x1x1 reconstruction head, InfoNCE + 10
MSE) against voxssl's PretrainModel + PretrainObjective: loss terms (max abs diff < 1e-5) and
gradients (max abs diff < 1e-5 x max(1, largest entry); per-parameter norms to 1e-4 relative or 1e-5 absolute)."""

from __future__ import annotations

import numpy as np
import torch
from parity_common import TOLERANCE, deterministic_array, filled_state, max_abs_diff

from voxssl.config.model import ModelConfig
from voxssl.config.pretrain import PretrainConfig
from voxssl.models.build import build_pretrain_model
from voxssl.train.objective import PretrainObjective


def test_hierarchical_step_loss_and_gradients_match_the_reference(fixture):
    ref = fixture("hierarchical_step.npz")
    config = ModelConfig(
        preset="hierarchical",
        base_channels=2,
        num_levels=5,
        projection="learned",
        projection_channels=32,
        projector_out=128,
        reconstruction="conv1x1",
    )
    model = build_pretrain_model(config)
    model.load_state_dict(filled_state(model.state_dict()))
    model.train()
    pairs, n = ref["positions1"].shape[:2]
    batch = {
        name: torch.from_numpy(deterministic_array(f"hierarchical/{name}", (pairs, 1, 16, 16, 16)))
        for name in ("view1", "view2", "target1", "target2")
    }
    batch["positions1"] = torch.from_numpy(ref["positions1"])
    batch["positions2"] = torch.from_numpy(ref["positions2"])
    batch["valid"] = torch.ones(pairs, n, dtype=torch.bool)
    objective = PretrainObjective(
        PretrainConfig(reconstruction_weight=10.0, infonce_temperature=0.1, infonce_weight=1.0)
    )
    step = objective(model, batch)
    assert abs(float(step.terms["infonce"]) - float(ref["info_nce"])) < TOLERANCE
    assert abs(float(step.terms["reconstruction"]) - float(ref["mse"])) < TOLERANCE
    assert abs(float(step.loss.detach()) - float(ref["total"])) < TOLERANCE
    step.loss.backward()
    params = dict(model.named_parameters())
    for key in [k for k in ref if k.startswith("grad:")]:
        # gradients reach ~40 here: the bound scales with the largest entry (fp32 sums)
        scale = max(1.0, float(abs(ref[key]).max()))
        assert max_abs_diff(params[key[5:]].grad, ref[key]) < TOLERANCE * scale, key
    norms = {k: params[k].grad.norm().item() for k in ref["grad_norm_keys"]}
    expected = dict(zip(ref["grad_norm_keys"], ref["grad_norms"], strict=True))
    assert set(norms) == set(params)  # every parameter of the reference has its counterpart
    for key, value in norms.items():
        # atol: a conv bias followed by BatchNorm has a zero gradient up to rounding (~1e-7)
        assert np.isclose(value, expected[key], rtol=1e-4, atol=TOLERANCE), key
