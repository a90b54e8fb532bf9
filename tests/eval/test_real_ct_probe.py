"""Smoke test on a real CT (skipped without ../shared/data/real): the slice-split probe runs end to end."""

import math

import pytest


@pytest.mark.real
def test_slice_split_probe_on_real_ct(real_data, benchmark_script):
    module = benchmark_script("real_ct_probe")
    result = module.run(
        real_data,
        spacing=(6.0, 6.0, 6.0),
        steps=8,
        patch=(32, 32, 16),
        base=4,
        levels=3,
        projection=4,
        lr=5e-2,
        batch_size=2,
    )
    dice = result["dice_upper_half"]
    # organs on both sides of the cut; every one is scored on the held-out (upper) slices
    assert {"liver", "spleen", "right_kidney", "left_kidney", "aorta"} <= set(dice)
    assert all(value is not None and 0.0 <= value <= 1.0 for value in dice.values())
    assert set(result["train_organs"]) >= {1, 2, 3, 6, 8}
    assert 0 < result["cut_slice"] < result["preprocessed_shape"][-1]
    assert math.isfinite(result["final_loss"]) and result["final_loss"] < result["first_loss"]


def test_cut_splits_the_organs_evenly_and_hides_the_labels_above_it():
    import numpy as np

    from voxssl.eval.slice_split import _labels_below, organs_in_both_halves, split_slice
    from voxssl.vocabulary import IGNORE_INDEX

    label = np.zeros((4, 4, 40), np.uint8)
    label[..., 0:30] = 6  # a large organ low in the scan: (lower) median slice 14
    label[:1, :1, 18:24] = 1  # small organs higher up: median slices 20 and 26
    label[:1, 1:2, 24:30] = 2
    # by voxels the liver alone would decide (slice 14); each organ counts once: median of (14, 20, 26)
    assert split_slice(label) == 20
    assert organs_in_both_halves(label, [1, 2, 6], min_voxels=1) == [1, 6]
    hidden, body = _labels_below(label, np.ones(label.shape, bool), 20)
    assert (hidden[..., 20:] == IGNORE_INDEX).all() and not body[..., 20:].any()
    assert np.array_equal(hidden[..., :20], label[..., :20]) and body[..., :20].all()
    assert split_slice(np.zeros((2, 2, 10), np.uint8)) == 5


@pytest.mark.real
def test_pretraining_on_the_scan_then_probing_it(real_data, benchmark_script, tmp_path):
    module = benchmark_script("real_ct_probe")
    backbone, recipe = module.pretrain_on_scan(
        real_data, tmp_path, spacing=(6.0, 6.0, 6.0), steps=2
    )
    assert backbone.is_file() and recipe.preprocess.ct.spacing == (6.0, 6.0, 6.0)
    result = module.run(
        real_data,
        spacing=(6.0, 6.0, 6.0),
        steps=4,
        patch=(32, 32, 16),
        weights=str(backbone),
        preprocess=recipe.preprocess,
        lr=5e-2,
        batch_size=2,
    )
    assert result["backbone"] == str(backbone) and "liver" in result["dice_upper_half"]
    assert math.isfinite(result["final_loss"])
