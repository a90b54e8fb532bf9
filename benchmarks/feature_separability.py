"""How linearly separable are the organs in a backbone's frozen embedding? (upper bound of a probe)

For each backbone (a voxssl weights file, or ``random`` for the recipe's architecture randomly
initialised): embed whole cached volumes (eval mode, every pyramid level upsampled to full
resolution and concatenated), standardise the channels on the training voxels, fit a multinomial
logistic regression (L-BFGS, full batch, background + the organs) on body voxels of the training
cases and report the mean Dice over organs on the test cases. No patch sampling and no SGD budget:
it measures the representation, not a probe's optimisation. docs/pretraining.md quotes it.
``--unprojected`` measures the decoder maps before the balanced pyramid's per-level projections
(what the projections keep of them). With one source for both, the test cases are the ones after
the training cases (never the same cases).

    .venv/bin/python benchmarks/feature_separability.py --recipe R.yaml \\
        --train-source pretrain --test-source heldout \\
        --weights random runs/demo/backbone.safetensors
    .venv/bin/python benchmarks/feature_separability.py --recipe recipes/demo.yaml \\
        --train-source phantoms --test-source phantoms --set model.projection_channels=8 --weights random
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from voxssl.eval.metrics import dice

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "feature_separability.json"
DEMO_CLASSES = [
    "liver",
    "spleen",
    "right_kidney",
    "left_kidney",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "pancreas",
    "vertebrae",
]


def embed(
    backbone: torch.nn.Module, case, unprojected: bool = False
) -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """``(D, X, Y, Z)`` embedding, label and body mask (bool tensor) of one cached case."""
    from voxssl.models.segmentation_heads import upsample_to
    from voxssl.transforms.pairs import as_channel_first

    image = torch.from_numpy(as_channel_first(np.asarray(case.image(), dtype=np.float32)))[None]
    with torch.no_grad():
        pyramid = backbone.eval().forward_features(image) if unprojected else backbone.eval()(image)
    size = pyramid[0].shape[2:]
    embedding = torch.cat([upsample_to(level, i, size) for i, level in enumerate(pyramid)], dim=1)[
        0
    ]
    return (
        embedding,
        np.asarray(case.label()),
        torch.from_numpy(np.array(case.body_mask(), dtype=bool)),
    )


def class_targets(label: np.ndarray, class_ids: list[int]) -> torch.Tensor:
    """0 = background, k + 1 = ``class_ids[k]``."""
    target = np.zeros(label.shape, dtype=np.int64)
    for k, organ in enumerate(class_ids):
        target[label == organ] = k + 1
    return torch.from_numpy(target)


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, iterations: int, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.zeros(x.shape[1], num_classes, requires_grad=True)
    bias = torch.zeros(num_classes, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=iterations, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight + bias, y) + l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return weight.detach(), bias.detach()


def dice_per_organ(
    prediction: torch.Tensor, target: torch.Tensor, num_organs: int
) -> list[float | None]:
    """Dice of organs 1..num_organs (voxssl's rule, :func:`voxssl.eval.metrics.dice`); None (JSON
    null) where an organ is absent from both maps and so not scored."""
    scores = [dice(prediction == k, target == k) for k in range(1, num_organs + 1)]
    return [None if math.isnan(s) else s for s in scores]


def separability(
    backbone,
    train_cases,
    test_cases,
    class_ids,
    voxels: int,
    iterations: int,
    l2: float,
    seed: int,
    unprojected: bool = False,
) -> dict:
    generator = torch.Generator().manual_seed(seed)
    features, targets = [], []
    for case in train_cases:
        embedding, label, body = embed(backbone, case, unprojected)
        x = embedding[:, body].T  # (V, D) body voxels
        keep = torch.randperm(x.shape[0], generator=generator)[: voxels // len(train_cases)]
        features.append(x[keep])
        targets.append(class_targets(label, class_ids)[body][keep])
    x, y = torch.cat(features), torch.cat(targets)
    mean, std = x.mean(0), x.std(0) + 1e-6
    weight, bias = fit_logistic_regression((x - mean) / std, y, len(class_ids) + 1, iterations, l2)
    per_case = []
    for case in test_cases:
        embedding, label, body = embed(backbone, case, unprojected)
        x_test = (embedding[:, body].T - mean) / std
        prediction = (x_test @ weight + bias).argmax(1)
        per_case.append(
            dice_per_organ(prediction, class_targets(label, class_ids)[body], len(class_ids))
        )
    organ_means = [
        float(np.mean([c[k] for c in per_case if c[k] is not None]))
        if any(c[k] is not None for c in per_case)
        else None
        for k in range(len(class_ids))
    ]
    case_means = [float(np.mean([d for d in c if d is not None])) for c in per_case]
    return {
        "mean_dice": float(np.mean(case_means)),
        "organs": organ_means,
        "embedding_dim": int(x.shape[1]),
        "feature_std_range": [float(std.min()), float(std.max())],
    }


def split_cases(
    cache, train_source: str, test_source: str, train_cases: int, test_cases: int
) -> tuple[list, list]:
    """Training and test cases; from one source, the test cases follow the training ones."""
    train = cache.cases(train_source, labelled=True)
    test = cache.cases(test_source, labelled=True)
    offset = train_cases if test_source == train_source else 0
    train, test = train[:train_cases], test[offset : offset + test_cases]
    if not train or not test:
        raise SystemExit(
            f"not enough labelled cases: {len(train)} for training ({train_source}), {len(test)} for "
            f"testing ({test_source})"
        )
    return train, test


def load(spec: str, recipe):
    from voxssl.models.build import build_backbone
    from voxssl.models.weights import load_backbone

    if spec == "random":
        torch.manual_seed(recipe.seed)
        return build_backbone(recipe.model)
    return load_backbone(spec)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--recipe", type=Path, required=True, help="Recipe whose data.cache_dir and model are used."
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="Recipe override, e.g. --set model.projection_channels=8 (for 'random'; repeatable).",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="Where to write the JSON.")
    parser.add_argument(
        "--unprojected",
        action="store_true",
        help="Use the decoder maps before the per-level projections.",
    )
    parser.add_argument(
        "--weights", nargs="+", required=True, help="Weights files and/or 'random'."
    )
    parser.add_argument("--train-source", required=True)
    parser.add_argument("--test-source", required=True)
    parser.add_argument("--train-cases", type=int, default=4)
    parser.add_argument("--test-cases", type=int, default=3)
    parser.add_argument("--classes", nargs="+", default=DEMO_CLASSES)
    parser.add_argument("--voxels", type=int, default=200_000, help="Training voxels in total.")
    parser.add_argument("--iterations", type=int, default=300, help="L-BFGS iterations.")
    parser.add_argument("--l2", type=float, default=1e-4)
    args = parser.parse_args(argv)

    from voxssl.config.recipe import load_recipe
    from voxssl.data.cache import open_cache
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.vocabulary import organ_id

    recipe = load_recipe(args.recipe, args.overrides)
    cache = open_cache(recipe.data.cache_dir)
    train, test = split_cases(
        cache, args.train_source, args.test_source, args.train_cases, args.test_cases
    )
    class_ids = [organ_id(name) for name in args.classes]
    rows = {}
    for spec in args.weights:
        started = time.perf_counter()
        rows[spec] = separability(
            load(spec, recipe),
            train,
            test,
            class_ids,
            args.voxels,
            args.iterations,
            args.l2,
            recipe.seed,
            args.unprojected,
        )
        rows[spec]["seconds"] = time.perf_counter() - started
        print(f"{spec}: mean Dice {rows[spec]['mean_dice']:.3f}", flush=True)
    result = {
        "benchmark": "feature_separability",
        "date": time.strftime("%Y-%m-%d"),
        "recipe": str(args.recipe),
        "overrides": args.overrides,
        "unprojected": args.unprojected,
        "train_cases": [c.case_id for c in train],
        "test_cases": [c.case_id for c in test],
        "classes": args.classes,
        "backbones": rows,
    }
    atomic_write_text(args.results, json.dumps(result, indent=2) + "\n")
    print("| backbone | mean Dice |\n|---|---|")
    for spec, row in rows.items():
        print(f"| {spec} | {row['mean_dice']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
