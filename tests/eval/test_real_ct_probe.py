"""Smoke test on a real CT (skipped without ../shared/data/real): the slice-split probe runs end to end."""

import importlib.util
import math
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "real_ct_probe.py"


@pytest.mark.real
def test_slice_split_probe_on_real_ct(real_data):
    spec = importlib.util.spec_from_file_location("real_ct_probe", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.run(real_data, spacing=(6.0, 6.0, 6.0), steps=8, patch=(32, 32, 16), base=4, levels=3, lr=5e-2, batch_size=2)
    dice = result["dice_upper_half"]
    # organs on both sides of the cut; every one is scored on the held-out (upper) slices
    assert {"liver", "spleen", "right_kidney", "left_kidney", "aorta"} <= set(dice)
    assert all(value is not None and 0.0 <= value <= 1.0 for value in dice.values())
    assert set(result["train_organs"]) >= {1, 2, 3, 6, 8}
    assert 0 < result["cut_slice"] < result["preprocessed_shape"][-1]
    assert math.isfinite(result["final_loss"]) and result["final_loss"] < result["first_loss"]
