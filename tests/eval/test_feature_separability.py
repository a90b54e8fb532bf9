"""The separability benchmark's logistic regression and Dice (benchmarks/feature_separability.py)."""

import numpy as np
import pytest
import torch


@pytest.fixture
def bench(benchmark_script):
    return benchmark_script("feature_separability")


def test_logistic_regression_separates_separable_classes_and_not_noise(bench):
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=generator)
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    x = centres[y] + 0.3 * torch.randn(600, 2, generator=generator)
    weight, bias = bench.fit_logistic_regression(x, y, 3, iterations=100, l2=1e-4)
    dice = bench.dice_per_organ((x @ weight + bias).argmax(1), y, 2)
    assert min(dice) > 0.98

    noise = torch.randn(600, 2, generator=generator)  # features that carry no label information
    weight, bias = bench.fit_logistic_regression(noise, y, 3, iterations=100, l2=1e-4)
    assert np.mean(bench.dice_per_organ((noise @ weight + bias).argmax(1), y, 2)) < 0.6


def test_dice_is_none_for_an_absent_organ_and_classes_follow_the_given_ids(bench):
    label = np.array([0, 6, 6, 1, 1, 1])
    target = bench.class_targets(label, [6, 1, 2])
    assert target.tolist() == [0, 1, 1, 2, 2, 2]
    assert bench.dice_per_organ(torch.tensor([0, 1, 0, 2, 2, 2]), target, 3) == pytest.approx(
        [2 / 3, 1.0, None]
    )


def test_one_source_gives_disjoint_training_and_test_cases(bench):

    class Cache:
        def cases(self, source, labelled):
            return [f"{source}{i}" for i in range(6)]

    train, test = bench.split_cases(Cache(), "ph", "ph", 4, 3)
    assert train == ["ph0", "ph1", "ph2", "ph3"] and test == ["ph4", "ph5"]
    train, test = bench.split_cases(Cache(), "a", "b", 4, 3)
    assert train == ["a0", "a1", "a2", "a3"] and test == ["b0", "b1", "b2"]


def test_embedding_is_the_projected_or_the_raw_pyramid(bench):
    from voxssl.models.fpn import FPN

    backbone = FPN(
        in_channels=1, base_channels=2, num_levels=3, projection="learned", projection_channels=3
    )

    class Case:
        def image(self):
            return np.random.default_rng(0).random((8, 8, 4), dtype=np.float32)

        def label(self):
            return np.zeros((8, 8, 4), np.uint8)

        def body_mask(self):
            return np.ones((8, 8, 4), bool)

    projected, _, _ = bench.embed(backbone, Case())
    raw, _, body = bench.embed(backbone, Case(), unprojected=True)
    assert projected.shape == (9, 8, 8, 4) and raw.shape == (2 + 4 + 8, 8, 8, 4) and body.all()
    level0 = backbone.eval().forward_features(torch.from_numpy(Case().image())[None, None])[0][0]
    torch.testing.assert_close(raw[:2], level0)
