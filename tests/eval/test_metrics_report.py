"""Dice / HD95 per organ and case; results files; overlays."""

import json
import math

import numpy as np
import pytest
from PIL import Image

from voxssl.eval.metrics import dice, score_case
from voxssl.eval.overlay import write_overlay
from voxssl.eval.report import write_report
from voxssl.vocabulary import IGNORE_INDEX


def _maps():
    ref = np.zeros((10, 10, 6), np.uint8)
    ref[2:6, 2:6, 1:4] = 1  # 48 voxels
    ref[7:9, 7:9, 2:4] = 6  # 8 voxels
    pred = ref.copy()
    pred[2:4, 2:6, 1:4] = 0  # half of organ 1 missed
    pred[0, 0, 0] = 3  # organ 3 predicted but absent from the reference
    return pred, ref


def test_dice_closed_form_and_nan_rules():
    pred, ref = _maps()
    scores = score_case("c", pred, ref, class_ids=[1, 3, 6, 8], spacing=(1, 1, 2), hd95=True)
    assert math.isclose(scores.dice[1], 2 * 24 / (24 + 48), rel_tol=1e-6)
    assert scores.dice[3] == 0.0  # false positive organ
    assert scores.dice[6] == 1.0 and scores.hd95[6] == 0.0
    assert math.isnan(scores.dice[8])  # absent in both: not scored
    assert scores.hd95[1] == 2.0  # the missed half is 2 voxels along x (1 mm)
    assert math.isclose(scores.mean_dice(), (2 / 3 + 0 + 1) / 3, rel_tol=1e-6)


def test_binary_dice_follows_the_one_rule():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2] = True
    b[1:3] = True
    assert dice(a, b) == 0.5 and dice(a, a) == 1.0
    assert math.isnan(dice(a & False, b & False))  # both empty: not scored
    assert dice(a, b & False) == 0.0 and dice(a & False, b) == 0.0  # one empty: a miss
    rng = np.random.default_rng(0)
    for _ in range(5):  # against the formula, on random 3D masks
        p, g = rng.random((6, 5, 4)) > 0.6, rng.random((6, 5, 4)) > 0.4
        expected = 2 * np.logical_and(p, g).sum() / (p.sum() + g.sum())
        assert math.isclose(dice(p, g), expected, rel_tol=1e-6)
    with pytest.raises(ValueError, match="differ"):
        dice(a, b[:2])


def test_ignore_voxels_and_partial_annotation():
    pred, ref = _maps()
    ref2 = ref.copy()
    ref2[2:4, 2:6, 1:4] = IGNORE_INDEX  # the missed half is not annotated
    scores = score_case("c", pred, ref2, class_ids=[1, 6], annotated=[1])
    assert scores.dice[1] == 1.0 and math.isnan(scores.dice[6])


def test_report_files(tmp_path):
    pred, ref = _maps()
    results = {
        "fold0": [score_case("a", pred, ref, [1, 6]), score_case("b", ref, ref, [1, 6])],
        "fold1": [score_case("c", ref, ref, [1, 6])],
    }
    paths = write_report(tmp_path, results, [1, 6], title="test", extra={"weights": "x"})
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    spleen = data["summary"]["organs"]["spleen"]
    assert math.isclose(spleen["dice_over_cases"]["mean"], (2 / 3 + 1 + 1) / 3, rel_tol=1e-6)
    assert math.isclose(spleen["dice_over_folds"]["mean"], ((2 / 3 + 1) / 2 + 1) / 2, rel_tol=1e-6)
    assert data["weights"] == "x" and len(data["cases"]) == 3
    assert paths["csv"].read_text(encoding="utf-8").count("\n") == 1 + 3 * 2
    assert "| spleen | 88.9 ± 15.7 |" in paths["md"].read_text(encoding="utf-8")


def test_low_data_subsets_are_reported_each_on_its_own(tmp_path):
    """Seed 004's Table 3 reports 4, 8 and 42 training images separately: never pool them."""
    pred, ref = _maps()
    bad = np.zeros_like(ref)
    results = {
        "fold0_n4": [score_case("a", bad, ref, [1, 6])],
        "fold1_n4": [score_case("b", bad, ref, [1, 6])],
        "fold0": [score_case("a", ref, ref, [1, 6])],
        "fold1": [score_case("b", pred, ref, [1, 6])],
    }
    paths = write_report(tmp_path, results, [1, 6], title="finetune")
    summary = json.loads(paths["json"].read_text(encoding="utf-8"))["summary"]
    assert list(summary["subsets"]) == ["4", "all"]
    assert summary["subsets"]["4"]["mean_dice"]["over_cases"]["mean"] == 0.0
    assert summary["subset"] == "all" and set(summary["folds"]) == {"fold0", "fold1"}
    assert math.isclose(
        summary["mean_dice"]["over_cases"]["mean"], (1 + (2 / 3 + 1) / 2) / 2, rel_tol=1e-6
    )
    markdown = paths["md"].read_text(encoding="utf-8")
    assert "## 4 training cases" in markdown and "## all training cases of each fold" in markdown


def test_overlay_png(tmp_path):
    pred, ref = _maps()
    image = np.random.default_rng(0).random(ref.shape).astype(np.float32)
    path = write_overlay(tmp_path / "c.png", image, pred, ref, num_slices=2)
    picture = np.asarray(Image.open(path))
    assert picture.shape == (2 * 10, 3 * 10 + 2 * 2, 3)
    # the reference panel is coloured where the organ is, the image panel is grey everywhere
    assert (picture[:, :10, 0] == picture[:, :10, 1]).all()
    assert (picture[:, 12:22, 0] != picture[:, 12:22, 1]).any()
