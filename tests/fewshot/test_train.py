"""The training loop: schedule by step, and an interrupted run resumes to the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxssl.config.fewshot import EncoderConfig, FewShotConfig, OptimConfig
from voxssl.fewshot.augment import EpisodeAugment
from voxssl.fewshot.checkpoint import read_fewshot_weights
from voxssl.fewshot.episodes import EpisodeSource, SuperpixelEpisodes
from voxssl.fewshot.model import build_alpnet
from voxssl.fewshot.slices import SliceVolume
from voxssl.fewshot.train import learning_rate, train_alpnet


def _episodes(config: FewShotConfig) -> SuperpixelEpisodes:
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 4)).astype(np.float32)
    superpixels = np.zeros((32, 32, 4), dtype=np.int32)
    superpixels[4:16, 4:16] = 1
    superpixels[16:28, 8:30] = 2
    source = EpisodeSource("toy", SliceVolume(image, 32), superpixels, np.ones(4, dtype=bool))
    return SuperpixelEpisodes([source], EpisodeAugment(config.augment))


def _config(steps: int) -> FewShotConfig:
    return FewShotConfig(
        encoder=EncoderConfig(type="cnn", cnn_channels=[4, 8]),
        image_size=32,
        device="cpu",
        optim=OptimConfig(steps=steps, checkpoint_every=2, log_every=1, lr=0.05),
    )


def _train(config, path, progress=None):
    torch.manual_seed(0)
    model = build_alpnet(config)
    return train_alpnet(model, _episodes(config), config, path, np.random.default_rng(1), progress)


def test_learning_rate_steps():
    optim = OptimConfig(lr=1e-3, lr_step_every=1000, lr_step_gamma=0.95)
    assert learning_rate(999, optim) == 1e-3 and learning_rate(1000, optim) == pytest.approx(
        0.95e-3
    )
    assert learning_rate(2500, optim) == pytest.approx(1e-3 * 0.95**2)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    config = _config(steps=5)
    _train(config, tmp_path / "straight.safetensors")

    def interrupt_after_three(steps, start, total):
        for step in steps:
            if step == 3:
                raise KeyboardInterrupt
            yield step

    with pytest.raises(KeyboardInterrupt):
        _train(config, tmp_path / "resumed.safetensors", interrupt_after_three)
    assert (tmp_path / "resumed.state.pt").is_file() and not (
        tmp_path / "resumed.safetensors"
    ).exists()
    _train(config, tmp_path / "resumed.safetensors")  # resumes at step 2
    assert not (tmp_path / "resumed.state.pt").exists()
    straight, stored_config, extra = read_fewshot_weights(tmp_path / "straight.safetensors")
    resumed, _, _ = read_fewshot_weights(tmp_path / "resumed.safetensors")
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=1e-5, atol=1e-6)
    assert stored_config.encoder.cnn_channels == [4, 8] and extra["steps"] == 5
