"""Test-time training changes the weights, and reset restores them exactly."""

from __future__ import annotations

import numpy as np
import torch

from voxssl.config.fewshot import AugmentConfig, EncoderConfig, FewShotConfig, TTTConfig
from voxssl.fewshot.augment import EpisodeAugment
from voxssl.fewshot.model import build_alpnet
from voxssl.fewshot.ttt import TestTimeTrainer


def test_ttt_changes_weights_and_resets():
    torch.manual_seed(0)
    config = FewShotConfig(encoder=EncoderConfig(type="cnn", cnn_channels=[4, 8]), image_size=32)
    model = build_alpnet(config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = TestTimeTrainer(
        model, TTTConfig(enabled=True, steps=3, lr=0.05), EpisodeAugment(AugmentConfig())
    )
    image = torch.rand(1, 3, 32, 32)
    prediction = torch.zeros(1, 32, 32, dtype=torch.uint8)
    prediction[:, 8:20, 8:24] = 1
    losses = trainer.adapt(image, prediction, np.random.default_rng(0))
    assert len(losses) == 3 and all(np.isfinite(losses))
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed
    trainer.reset()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert (
        trainer.adapt(image, torch.zeros_like(prediction), np.random.default_rng(0)) == []
    )  # empty: no step
