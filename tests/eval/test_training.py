"""Probe keeps the backbone untouched; fine-tuning freezes it, then ramps its learning rate."""

import itertools
import math

import numpy as np
import pytest
import torch

from voxssl.config.downstream import FinetuneConfig, ProbeConfig
from voxssl.config.model import ModelConfig
from voxssl.eval.sampling import PatchSampler, labelled_volume
from voxssl.eval.schedule import backbone_lr
from voxssl.eval.train import BackboneSchedule, train_segmentation
from voxssl.models.build import build_backbone
from voxssl.models.segmentation import SegmentationModel
from voxssl.models.segmentation_heads import build_head


def test_backbone_lr_schedule():
    def lr(step):
        return backbone_lr(step, frozen_steps=15_000, ramp_steps=1_200, lr_start=3e-7, lr=3e-4)

    assert lr(0) == 0 and lr(14_999) == 0
    assert math.isclose(lr(15_000), 3e-7)
    assert math.isclose(lr(15_600), math.sqrt(3e-7 * 3e-4))  # geometric midpoint
    assert lr(16_200) == 3e-4 and lr(40_000) == 3e-4
    steps = [lr(s) for s in range(15_000, 16_201, 100)]
    assert all(b > a for a, b in itertools.pairwise(steps))


def _setup(cfg, seed=0, feature_norm="none"):
    rng = np.random.default_rng(seed)
    label = np.zeros((24, 24, 12), np.uint8)
    label[6:14, 8:16, 3:9] = 6
    image = rng.random(label.shape).astype(np.float32) * 0.2 + (label > 0) * 0.5
    volume = labelled_volume("a", image, label, np.ones(label.shape, bool), [6], None, rng)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(
            ModelConfig(preset="hierarchical", base_channels=2, num_levels=2, projection_channels=2)
        )
        model = SegmentationModel(
            backbone,
            build_head(cfg.head.kind, backbone.level_channels, 1, 4, feature_norm=feature_norm),
        )
    return model, PatchSampler([volume], cfg.patch_size, cfg.foreground_fraction, rng)


def _backbone_state(model):
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


def test_probe_never_changes_the_backbone_and_is_seeded():
    cfg = ProbeConfig(
        classes=["liver"], patch_size=(16, 16, 8), batch_size=2, steps=3, lr=1e-2, log_every=1
    )
    model, sampler = _setup(cfg)
    before = _backbone_state(model)
    history = train_segmentation(model, sampler, cfg, torch.device("cpu"))
    after = model.backbone.state_dict()
    assert all(
        torch.equal(before[k], after[k]) for k in before
    )  # weights AND BatchNorm running stats
    assert len(history) == 3 and "lr_backbone" not in history[0]
    again_model, again_sampler = _setup(cfg)
    again = train_segmentation(again_model, again_sampler, cfg, torch.device("cpu"))
    assert [h["loss"] for h in again] == [h["loss"] for h in history]


def test_probe_on_cached_features_learns_and_leaves_the_backbone_alone():
    """The head trains on crops of the cached pyramid (no backbone call per step), the loss falls,
    the cosine schedule is logged, and the trained model segments the whole volume."""
    from voxssl.eval.feature_cache import CachedPatchSampler, cache_features

    cfg = ProbeConfig(
        classes=["liver"],
        patch_size=(16, 16, 8),
        batch_size=2,
        steps=60,
        lr=5e-2,
        log_every=20,
        lr_schedule="cosine",
        feature_cache=True,
    )
    model, sampler = _setup(cfg, feature_norm="batch")
    before = _backbone_state(model)
    cached = cache_features(model.backbone, sampler.volumes, torch.device("cpu"), progress=False)
    cached_sampler = CachedPatchSampler(
        cached, cfg.patch_size, cfg.foreground_fraction, np.random.default_rng(0)
    )
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    history = train_segmentation(model, cached_sampler, cfg, torch.device("cpu"))
    assert not calls  # the backbone never ran during training
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[0]["lr_head"] > history[1]["lr_head"] > history[2]["lr_head"]
    volume = sampler.volumes[0]
    with torch.no_grad():
        probs = model.predict_probabilities(torch.from_numpy(volume.image)[None])[0, 0].numpy()
    inside, outside = probs[volume.target == 1].mean(), probs[volume.target == 0].mean()
    assert inside > outside + 0.2, (inside, outside)


@pytest.mark.parametrize("from_scratch", [False, True])
def test_finetune_freezes_then_trains_the_backbone(from_scratch):
    cfg = FinetuneConfig(
        classes=["liver"],
        patch_size=(16, 16, 8),
        batch_size=2,
        steps=4,
        lr=1e-2,
        log_every=1,
        frozen_steps=2,
        ramp_steps=2,
        backbone_lr_start=1e-4,
        from_scratch=from_scratch,
    )
    model, sampler = _setup(cfg)
    schedule = BackboneSchedule.from_config(cfg)
    frozen_cfg = FinetuneConfig(**{**cfg.__dict__, "steps": 2})
    before = _backbone_state(model)
    train_segmentation(model, sampler, frozen_cfg, torch.device("cpu"), schedule=schedule)
    unchanged = all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert (
        unchanged != from_scratch
    )  # frozen for 2 steps, unless from scratch (trained from step 0)
    history = train_segmentation(model, sampler, cfg, torch.device("cpu"), schedule=schedule)
    assert not all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    lrs = [h["lr_backbone"] for h in history]
    assert lrs == ([1e-2] * 4 if from_scratch else [0.0, 0.0, 1e-4, pytest.approx(1e-3)])
