"""benchmarks/phantom_probe.py: recipes per seed, means over seeds and the pass/fail report."""

import argparse


def _run(seed, pretrained, random_init):
    arm = lambda mean, organs: {"mean_dice": mean, "organs": organs}  # noqa: E731
    return {
        "seed": seed,
        "pretrained": arm(pretrained, {"liver": pretrained, "aorta": None}),
        "random_init": arm(random_init, {"liver": random_init, "aorta": 0.0}),
        "pretrained_minus_random": pretrained - random_init,
    }


def test_seed_reaches_both_recipes_but_not_the_folds(tmp_path, benchmark_script):
    bench = benchmark_script("phantom_probe")
    args = argparse.Namespace(
        pretrain_steps=0, probe_steps=0, loss=None, folds=None, probe_set=None
    )
    pretrain, probe = bench.build_recipes(tmp_path, args, seed=3)
    assert pretrain.seed == 3 and probe.seed == 3 and pretrain.name == "pretrain-seed3"
    assert probe.probe.cv.seed == bench.build_recipes(tmp_path, args)[1].probe.cv.seed
    assert pretrain.pretrain.sources == ["pretrain"] and probe.probe.source == "heldout"


def test_report_averages_over_seeds_and_fails_on_the_smallest_margin(benchmark_script):
    bench = benchmark_script("phantom_probe")
    runs = [_run(0, 0.40, 0.20), _run(1, 0.30, 0.28)]
    pretrained = bench.mean_over_seeds(runs, "pretrained")
    assert abs(pretrained["mean_dice"] - 0.35) < 1e-9 and pretrained["organs"]["aorta"] is None
    assert abs(bench.mean_over_seeds(runs, "random_init")["organs"]["liver"] - 0.24) < 1e-9
    result = {
        "pretrained": pretrained,
        "random_init": bench.mean_over_seeds(runs, "random_init"),
        "runs": runs,
        "smallest_margin": 0.02,
        "pretrain_steps": 300,
        "pretrain_cases": 8,
        "pretrain_seconds": 290.0,
        "probe_steps": 3000,
        "probe_batch_size": 4,
        "probe_patch_size": [48, 48, 16],
        "probe_lr": 0.01,
        "probe_loss": "bce",
        "feature_cache": True,
        "probe_cases": 8,
        "folds": "all",
        "machine": "cpu",
        "date": "today",
    }
    text = bench.markdown_section(result)
    assert (
        "| liver | 35.0 | 24.0 |" in text
        and "| 1 | 30.0 | 28.0 | +2.0 |" in text
        and "**FAILED**" in text
    )
    result["smallest_margin"] = bench.REQUIRED_MARGIN
    assert "FAILED" not in bench.markdown_section(result)
