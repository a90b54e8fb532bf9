"""Episode augmentation (joint, no flips) and superpixel episodes with the Setting 2 filter."""

from __future__ import annotations

import numpy as np
import torch

from voxssl.config.fewshot import AugmentConfig, FewShotConfig
from voxssl.fewshot.augment import EpisodeAugment


def _blob() -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.zeros(48, 48, dtype=torch.uint8)
    mask[10:30, 14:40] = 1
    return mask.float()[None].repeat(3, 1, 1), mask


def test_identity_augmentation_is_exact():
    aug = EpisodeAugment(
        AugmentConfig(
            rotate_deg=0, shift_px=0, shear_deg=0, scale=(1, 1), elastic_alpha=0, gamma=(1, 1)
        )
    )
    image, mask = _blob()
    image = image * 0.5 + 0.25
    draw = aug.randomize(np.random.default_rng(0), (48, 48))
    out, (out_mask,) = aug.apply(draw, image, [mask])
    torch.testing.assert_close(out, image, atol=1e-4, rtol=0)
    assert torch.equal(out_mask, mask)


def test_slice_and_mask_get_the_same_transform():
    aug = EpisodeAugment(AugmentConfig(gamma=(1, 1)))  # geometry of the recipe, no intensity change
    image, mask = _blob()
    rng = np.random.default_rng(3)
    draw = aug.randomize(rng, (48, 48))
    assert np.linalg.det(draw.matrix[:2, :2]) > 0  # no flips
    out, (out_mask,) = aug.apply(draw, image, [mask])
    agree = ((out[0] > 0.5).to(torch.uint8) == out_mask).float().mean()
    assert agree > 0.98 and not torch.equal(out_mask, mask)
    again, (again_mask,) = aug.apply(draw, image, [mask])  # deterministic given the draw
    assert torch.equal(again_mask, out_mask) and torch.equal(again, out)


def test_episodes_respect_setting2(phantom_cache):
    from voxssl.fewshot.augment import EpisodeAugment
    from voxssl.fewshot.data import episode_sources, fewshot_cases, superpixel_store
    from voxssl.fewshot.episodes import SuperpixelEpisodes
    from voxssl.fewshot.experiment import prepare_superpixels

    config: FewShotConfig = phantom_cache["recipe"].fewshot
    cache_dir = phantom_cache["cache_dir"]
    cases = fewshot_cases(cache_dir, None)[:2]
    prepare_superpixels(cases, cache_dir, config)
    sources = episode_sources(
        cases, superpixel_store(cache_dir, config), config, test_classes=[2, 3]
    )
    episodes = SuperpixelEpisodes(sources, EpisodeAugment(config.augment))
    for source, case in zip(sources, cases, strict=True):
        kidney = np.isin(np.asarray(case.label()), [2, 3]).any(axis=(0, 1))
        assert kidney.any() and not (source.usable & kidney).any()
    rng = np.random.default_rng(0)
    for _ in range(5):
        episode = episodes.sample(rng)
        assert episode.support.shape == (1, 3, 64, 64) and episode.query.shape == (1, 3, 64, 64)
        assert (
            set(episode.support_label.unique().tolist()) <= {0, 1}
            and episode.support_label.sum() > 0
        )
        index = [s.key for s in sources].index(episode.case)
        assert sources[index].usable[episode.z]
