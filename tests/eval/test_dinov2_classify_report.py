"""benchmarks/dinov2_classify.py: the recipes of a seed and the pass / fail report."""

import argparse


def _run(seed, start, continued):
    arm = lambda auc: {"auc": auc, "auc_std_over_folds": 0.01}  # noqa: E731
    return {
        "seed": seed,
        "start": arm(start),
        "continued": arm(continued),
        "continued_minus_start": continued - start,
    }


def test_seed_reaches_the_pretraining_not_the_folds(tmp_path, benchmark_script):
    bench = benchmark_script("dinov2_classify")
    args = argparse.Namespace(steps=0, features="cls_mean")
    pretrain, classify = bench.build_recipes(tmp_path, args, seed=4)
    assert pretrain.seed == 4 and pretrain.name == "dinov2-seed4"
    assert pretrain.dinov2.data.cache_sources == ["pretrain"]
    assert classify.classify.data.source == "heldout" and classify.classify.data.organs == ["liver"]
    assert classify.classify.features == "cls_mean"
    other = bench.build_recipes(tmp_path, args, seed=5)[1]
    assert other.classify.cv.seed == classify.classify.cv.seed  # the same folds for every seed


def test_report_fails_on_the_smallest_margin(benchmark_script):
    bench = benchmark_script("dinov2_classify")
    runs = [_run(0, 0.70, 0.85), _run(1, 0.72, 0.74)]
    result = {
        "task": "contains liver",
        "features": "cls",
        "vit": "ViT 64 wide, 4 blocks, 8 px patches",
        "steps": 300,
        "batch_size": 32,
        "pretrain_cases": 8,
        "eval_cases": 8,
        "pretrain_seconds": 200.0,
        "folds": 4,
        "class_counts": {"no_liver": 200, "liver": 180},
        "machine": "x86_64 CPU x2",
        "date": "2026-11-30",
        "start_auc": 0.71,
        "continued_auc": 0.795,
        "smallest_margin": 0.02,
        "runs": runs,
    }
    text = bench.markdown_section(result)
    assert "| 0 | 0.700 ± 0.010 | 0.850 ± 0.010 | +0.150 |" in text
    assert "| **mean** | **0.710** | **0.795** | **+0.085** |" in text
    assert "**FAILED**" in text
    result["smallest_margin"] = 0.1
    assert "FAILED" not in bench.markdown_section(result)
