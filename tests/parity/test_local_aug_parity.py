"""The local augmentations (hierarchical-dense-ssl ``AppearanceTransform``, the rates of its
pretraining dataset) against voxssl's, by their statistics over many runs on one fixed input (the
random streams differ), and the Bezier map exactly on fixed control points.

Tolerance of a statistic: |mean_voxssl - mean_reference| <= 4 * sqrt(se_voxssl^2 + se_reference^2)
(a two-sample z-test at 4 sigma); the reference has 300 runs per component, voxssl 100 here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from parity_common import (
    FIXTURES,
    TOLERANCE,
    augmentation_input,
    run_statistics,
    summarize_runs,
)

from voxssl.config.pretrain import LocalAugConfig
from voxssl.transforms.local import (
    RandBezierIntensity,
    RandInPainting,
    RandLocalPixelShuffle,
    build_local_augmentations,
)

RUNS = 100


def _components():
    cfg = LocalAugConfig()
    return {
        "shuffle": [
            RandLocalPixelShuffle(
                cfg.shuffle_prob,
                cfg.shuffle_blocks,
                cfg.shuffle_block_fraction,
                cfg.shuffle_permutation,
            )
        ],
        "nonlinear": [RandBezierIntensity(cfg.nonlinear_prob, cfg.nonlinear_invert_prob)],
        "inpainting": [
            RandInPainting(
                cfg.inpaint_prob,
                cfg.inpaint_max_boxes,
                cfg.inpaint_continue_prob,
                cfg.inpaint_size_fraction,
                cfg.inpaint_margin,
            )
        ],
        "all": build_local_augmentations(cfg),
    }


@pytest.mark.parametrize("component", ["shuffle", "nonlinear", "inpainting", "all"])
def test_local_augmentation_statistics_match_the_reference(component):
    reference = json.loads((FIXTURES / "local_aug_stats.json").read_text())[component]
    image = augmentation_input()
    transforms = _components()[component]
    rng = np.random.default_rng(2024)
    runs = []
    for _ in range(RUNS):
        out = image[None]
        for transform in transforms:
            out = transform.set_generator(rng)(out)
        runs.append(run_statistics(image, out[0]))
    ours = summarize_runs(runs)
    for key, ref in reference.items():
        bound = 4.0 * np.hypot(ours[key]["se"], ref["se"]) + 1e-9
        assert abs(ours[key]["mean"] - ref["mean"]) <= bound, (
            f"{component} {key}: voxssl {ours[key]['mean']:.5f} vs reference {ref['mean']:.5f} "
            f"(bound {bound:.5f})"
        )


def test_bezier_map_matches_the_reference_on_fixed_points(fixture):
    ref = fixture("bezier.npz")
    transform = RandBezierIntensity(1.0)
    x = ref["x"].astype(np.float32).reshape(1, 1, 1, -1)
    for points, expected in zip(ref["points"], ref["y"], strict=True):
        transform.set_points(points)
        out = transform.apply(x).reshape(-1)
        assert np.abs(out - expected).max() < TOLERANCE, points.tolist()
