"""The linear probe's frozen-feature cache: crops of the cached pyramid are the whole-volume
features of the patch, the head sees them aligned, and the cache obeys its memory limit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from voxssl.config.downstream import ProbeConfig
from voxssl.errors import ConfigError
from voxssl.eval.feature_cache import (
    CachedPatchSampler,
    cache_features,
    compute_pyramid,
    decide_feature_cache,
    pyramid_bytes,
)
from voxssl.eval.sampling import labelled_volume
from voxssl.eval.schedule import head_lr
from voxssl.models.fpn import FPN
from voxssl.models.segmentation_heads import FPNLinearHead
from voxssl.vocabulary import IGNORE_INDEX

CLASSES = [6, 1]  # liver, spleen


def tiny_backbone(levels: int = 3) -> FPN:
    torch.manual_seed(0)
    return FPN(in_channels=1, base_channels=4, num_levels=levels, projection_channels=4).eval()


def volume(shape=(21, 18, 10), seed=0):
    rng = np.random.default_rng(seed)
    image = rng.random(shape, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    label[2:9, 3:10, 1:6] = 6
    label[12:19, 9:16, 4:9] = 1
    body = np.ones(shape, dtype=bool)
    return labelled_volume(f"case{seed}", image, label, body, CLASSES, None, rng)


def test_cached_levels_are_padded_to_the_coarsest_cell():
    backbone = tiny_backbone(levels=3)  # cell: 4 voxels
    levels = compute_pyramid(backbone, volume().image, torch.device("cpu"))
    assert [lv.shape[1:] for lv in levels] == [(24, 20, 12), (12, 10, 6), (6, 5, 3)]
    assert [lv.shape[0] for lv in levels] == list(backbone.level_channels)
    assert pyramid_bytes((21, 18, 10), backbone.level_channels) == 4 * sum(lv.size for lv in levels)


def test_head_on_a_cached_crop_equals_the_whole_volume_prediction_there():
    """The crop starts on a coarsest-cell boundary, so upsampling the cropped levels reproduces the
    whole-volume logits of those voxels exactly: training sees the features inference uses."""
    backbone = tiny_backbone(levels=3)
    case = volume()
    cached = cache_features(backbone, [case], torch.device("cpu"), progress=False)
    torch.manual_seed(1)
    head = FPNLinearHead(backbone.level_channels, num_classes=2).eval()
    whole = head([torch.from_numpy(lv)[None] for lv in cached[0].levels])[0]
    sampler = CachedPatchSampler(
        cached, (8, 8, 4), foreground_fraction=0.5, rng=np.random.default_rng(0)
    )
    rng = np.random.default_rng(1)
    for _ in range(20):
        start = sampler.aligned_start([rng.integers(d) for d in case.shape], case.shape)
        levels, target, _body, _annotated = sampler.crop_at(cached[0], start)
        assert all(s % 4 == 0 for s in start)
        region = tuple(slice(s, s + 8 if i < 2 else s + 4) for i, s in enumerate(start))
        patch_logits = head([torch.from_numpy(lv)[None] for lv in levels])[0]
        np.testing.assert_allclose(
            patch_logits.detach().numpy(), whole[(slice(None), *region)].detach().numpy(), atol=1e-5
        )
        expected_target = np.full((8, 8, 4), IGNORE_INDEX, dtype=np.uint8)
        inside = tuple(
            slice(0, min(8 if i < 2 else 4, d - s))
            for i, (s, d) in enumerate(zip(start, case.shape, strict=True))
        )
        expected_target[inside] = case.target[
            tuple(slice(s, s + n.stop) for s, n in zip(start, inside, strict=True))
        ]
        np.testing.assert_array_equal(target, expected_target)


def test_patch_starts_cover_the_whole_volume_and_stay_on_it():
    case = volume(shape=(21, 18, 10))
    backbone = tiny_backbone(levels=3)
    sampler = CachedPatchSampler(
        cache_features(backbone, [case], torch.device("cpu"), progress=False),
        (8, 8, 4),
        0.5,
        np.random.default_rng(0),
    )
    centres = [(0, 0, 0), (20, 17, 9), (10, 9, 5), (19, 1, 8)] + [
        tuple(np.random.default_rng(i).integers((21, 18, 10))) for i in range(50)
    ]
    for centre in centres:
        start = sampler.aligned_start(centre, case.shape)
        for c, s, p, dim in zip(centre, start, (8, 8, 4), case.shape, strict=True):
            assert s % 4 == 0 and s <= c < s + p, (centre, start)
            assert s + p - dim < 4  # at most part of one cell of padding
    small = sampler.aligned_start((1, 1, 1), (5, 5, 3))
    assert small == [0, 0, 0]


def test_cached_batch_shapes_and_training_targets():
    backbone = tiny_backbone(levels=3)
    cases = cache_features(
        backbone, [volume(seed=0), volume(seed=1)], torch.device("cpu"), progress=False
    )
    sampler = CachedPatchSampler(
        cases, (8, 8, 4), foreground_fraction=1.0, rng=np.random.default_rng(0)
    )
    batch = sampler.batch(3)
    c0, c1, c2 = backbone.level_channels
    assert [lv.shape for lv in batch["levels"]] == [
        (3, c0, 8, 8, 4),
        (3, c1, 4, 4, 2),
        (3, c2, 2, 2, 1),
    ]
    assert batch["target"].shape == (3, 8, 8, 4) and batch["target"].dtype == np.int64
    assert all(((t == 1) | (t == 2)).any() for t in batch["target"])  # foreground-centred


def test_misaligned_patch_is_a_clear_error():
    cases = cache_features(tiny_backbone(levels=3), [volume()], torch.device("cpu"), progress=False)
    with pytest.raises(ConfigError, match=r"patch_size.*multiple of 4"):
        CachedPatchSampler(cases, (8, 6, 4), 0.5, np.random.default_rng(0))


def test_cache_decision_follows_the_memory_limit():
    cases = [volume()]
    channels = [4, 4, 4]
    gib = pyramid_bytes(cases[0].shape, channels) / 2**30
    assert decide_feature_cache("auto", cases, channels, gib * 2, "r.yaml") is True
    assert decide_feature_cache("auto", cases, channels, gib / 2, "r.yaml") is False
    assert decide_feature_cache(False, cases, channels, gib * 2, "r.yaml") is False
    with pytest.raises(ConfigError, match="feature_cache_max_gib"):
        decide_feature_cache(True, cases, channels, gib / 2, "r.yaml")


def test_probe_config_validates_the_cache_keys():
    from voxssl.config.loader import from_dict

    assert from_dict(ProbeConfig, {"feature_cache": True}, where="probe").feature_cache is True
    assert ProbeConfig().feature_cache == "auto"
    with pytest.raises(ConfigError, match="feature_cache"):
        from_dict(ProbeConfig, {"feature_cache": "sometimes"}, where="probe")
    with pytest.raises(ConfigError, match="feature_cache_max_gib"):
        from_dict(ProbeConfig, {"feature_cache_max_gib": 0.0}, where="probe")
    with pytest.raises(ConfigError, match="lr_schedule"):
        from_dict(ProbeConfig, {"lr_schedule": "linear"}, where="probe")


def test_cosine_head_schedule():
    assert head_lr(0, 100, 0.1, "cosine") == pytest.approx(0.1)
    assert head_lr(50, 100, 0.1, "cosine") == pytest.approx(0.05)
    assert head_lr(100, 100, 0.1, "cosine") == pytest.approx(0.0, abs=1e-12)
    assert head_lr(37, 100, 0.1, "constant") == 0.1
    values = [head_lr(s, 100, 0.1, "cosine") for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    assert math.isclose(values[25], 0.05 * (1 + math.cos(math.pi / 4)))
