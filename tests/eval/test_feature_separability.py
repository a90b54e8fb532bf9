"""The separability benchmark's logistic regression and Dice (benchmarks/feature_separability.py)."""

import importlib.util
from pathlib import Path

import numpy as np
import torch

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "feature_separability.py"


def _module():
    spec = importlib.util.spec_from_file_location("feature_separability", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_logistic_regression_separates_separable_classes_and_not_noise():
    bench = _module()
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


def test_dice_is_none_for_an_absent_organ_and_classes_follow_the_given_ids():
    bench = _module()
    label = np.array([0, 6, 6, 1, 1, 1])
    target = bench.class_targets(label, [6, 1, 2])
    assert target.tolist() == [0, 1, 1, 2, 2, 2]
    assert bench.dice_per_organ(torch.tensor([0, 1, 0, 2, 2, 2]), target, 3) == [2 / 3, 1.0, None]
