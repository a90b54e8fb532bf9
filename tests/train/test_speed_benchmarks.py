"""The pretraining speed benchmarks flag a diverging loss and report what they measured."""

from __future__ import annotations

import math

import pytest


@pytest.fixture(scope="module")
def throughput(benchmark_script):
    return benchmark_script("pretrain_throughput")


def test_divergence_is_a_curve_that_ends_high_or_a_non_finite_loss(throughput):
    # the recorded 2026-11-22 paper-shape run: one step after the first, nothing to come back
    assert throughput.divergence([12.26, 413.36], 2.0).startswith("loss 413.4 at step 2 > 2")
    # the paper objective's transient (pretrain_stability): a spike, then back below 2x
    spiky = [16.9, 202.1, 62.4, 25.1, 26.4, 15.8, 15.0, 14.1]
    assert throughput.divergence(spiky, 2.0) is None
    assert (
        throughput.spike(spiky, 2.0)
        == "peak 202.1 at step 2 (12.0x the first loss), 14.1 at step 8"
    )
    # a curve whose last quarter stays high diverged, even when its very last step dips
    rising = [10.0, 12.0, 15.0, 19.0, 24.0, 30.0, 41.0, 19.0]
    assert throughput.divergence(rising, 2.0).startswith("loss 30 at steps 7-8")
    assert throughput.divergence([21.6, 13.4, 10.0], 2.0) is None
    assert throughput.spike([21.6, 13.4, 10.0], 2.0) is None
    assert "nan" in throughput.divergence([5.0, 6.0, math.nan, 5.0], 2.0)
    assert throughput.divergence([5.0, 9.9], 2.0) is None
    assert throughput.divergence([], 2.0) == "no step completed"


def test_stability_script_uses_the_same_rule(throughput, benchmark_script):
    stability = benchmark_script("pretrain_stability")
    # the stability script imports the throughput script's rule (one definition)
    assert stability.divergence.__module__ == stability.spike.__module__ == "pretrain_throughput"


def test_table_shows_the_ratio_the_memory_and_a_divergence(throughput):
    row = {
        "preset": "vox2vec",
        "shape": "cpu",
        "device": "cpu",
        "device_name": "x86_64 CPU",
        "threads": 1,
        "step": {"pairs": 1, "patch": [64, 64, 32], "positives": 1024},
        "ratio": {
            "ratio_median": 1.62,
            "ratio_min": 1.51,
            "ratio_max": 1.70,
            "pairs": [{}] * 5,
            "reference_s_per_step": 9.1,
            "voxssl_s_per_step": 5.6,
            "load_average_before": 2.1,
            "load_average_after": 2.4,
        },
        "loop": {
            "steps_per_s": 0.18,
            "projected_hours_50k_steps": 77.0,
            "peak_rss_gb": 3.2,
            "losses": [12.3, 413.4],
        },
        "data": {"pairs_per_s_one_worker": 30.0},
        "data_over_consumption": 166.0,
        "divergence": "loss 413.4 at step 2 > 2 x the first loss 12.3",
    }
    spiky = {**row, "divergence": None, "spike": "peak 202.1 at step 2 (12.0x the first loss)"}
    table = throughput.markdown_section({"vox2vec/cpu/cpu": row})
    line = next(x for x in table.splitlines() if x.startswith("| vox2vec"))
    for text in ("**1.62x** (1.51-1.70, 5)", "9.10 -> 5.60", "3.20 GB RSS", "166.0x", "DIVERGED"):
        assert text in line, text
    table = throughput.markdown_section({"vox2vec/cpu/cpu": spiky})
    line = next(x for x in table.splitlines() if x.startswith("| vox2vec"))
    assert "DIVERGED" not in line and "spike: peak 202.1 at step 2" in line
