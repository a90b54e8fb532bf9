"""Smoke benchmark on a real CT: probe on the labels of one half of the slices, Dice on the other.

Data: ../shared/data/real/ts_ct.nii.gz (contrast CT, 3 mm) with ts_ct_label_btcv.nii.gz
(TotalSegmentator labels remapped to BTCV ids; a good but imperfect reference). Protocol
(voxssl.eval.slice_split): preprocess with the CT recipe's window at ``--spacing``; cut the scan at
the axial slice that splits the organs most evenly; the labels below the cut train a linear head
on the frozen backbone for ``--steps`` steps (the backbone sees the whole scan); the slices above
the cut are predicted (sliding window, Gaussian blending) and scored per organ, for the organs that
lie on both sides. Backbone: ``--weights`` (a voxssl file) or a random-init hierarchical FPN of
``--base``/``--levels``/``--projection`` (the default, recipes/demo.yaml's architecture: no
pretrained CT weights ship with the repository). The result is a pipeline check on real anatomy,
not a number to compare with papers.

    .venv/bin/python benchmarks/real_ct_probe.py            # ~4 CPU minutes
    .venv/bin/python benchmarks/real_ct_probe.py --weights runs/ct-hierarchical/backbone.safetensors
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("VOXSSL_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
RESULTS = REPO / "benchmarks" / "results" / "real_ct_probe.json"
README = REPO / "benchmarks" / "README.md"
SECTION = "real_ct_probe"  # its section of benchmarks/README.md


def run(
    real_data: Path,
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0),
    steps: int = 3000,
    patch: tuple[int, int, int] = (64, 64, 16),
    weights: str = "random",
    base: int = 8,
    levels: int = 4,
    projection: int = 16,
    lr: float = 1e-2,
    seed: int = 0,
    batch_size: int = 4,
    feature_cache: bool | str = "auto",
    preprocess=None,
) -> dict:
    """Run the slice-split probe; returns per-organ Dice (above the cut) and facts.

    ``preprocess``: the recipe section to preprocess with (default: the CT defaults at ``spacing``).
    """
    import nibabel as nib
    import torch

    from voxssl.config.data import CTPreprocessConfig, PreprocessConfig
    from voxssl.config.downstream import HeadConfig, ProbeConfig
    from voxssl.config.model import ModelConfig
    from voxssl.data.readers import read_volume
    from voxssl.eval.slice_split import organs_in_both_halves, slice_split_probe
    from voxssl.vocabulary import organ_name

    image_path, label_path = real_data / "ts_ct.nii.gz", real_data / "ts_ct_label_btcv.nii.gz"
    ras_label = np.rint(read_volume(label_path).data).astype(np.uint8)
    organs = organs_in_both_halves(ras_label, list(range(1, 14)))
    preprocess = preprocess or PreprocessConfig(ct=CTPreprocessConfig(spacing=spacing))
    cfg = ProbeConfig(
        classes=organs,
        patch_size=patch,
        batch_size=batch_size,
        steps=steps,
        lr=lr,
        log_every=max(steps // 5, 1),
        sw_roi_size=(128, 128, 64),
        device="auto",
        head=HeadConfig(kind="linear", feature_norm="batch"),
        feature_cache=feature_cache,
    )
    if weights == "random":
        from voxssl.models.build import build_backbone

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = build_backbone(
                ModelConfig(
                    preset="hierarchical",
                    base_channels=base,
                    num_levels=levels,
                    projection_channels=projection,
                )
            )
        described = f"random init hierarchical base {base}, {levels} levels, {projection} channels per level"
    else:
        from voxssl.hub.resolve import resolve_weights
        from voxssl.models.weights import load_backbone

        backbone, _ = load_backbone(
            resolve_weights(weights), expect={"architecture.in_channels": 1}
        )
        described = weights
    started = time.perf_counter()
    scores, facts = slice_split_probe(
        image_path, label_path, "ct", preprocess, cfg, backbone.eval(), seed=seed
    )
    dice = {
        organ_name(k): (None if not np.isfinite(v) else round(float(v), 4))
        for k, v in scores.dice.items()
    }
    return {
        "benchmark": "real_ct_probe",
        "scan": image_path.name,
        "scan_shape": list(nib.load(str(image_path)).shape),
        "backbone": described,
        "spacing_mm": list(spacing),
        "steps": steps,
        "patch": list(patch),
        "batch_size": batch_size,
        "lr": lr,
        "head": "linear, feature_norm batch",
        "feature_cache": feature_cache,
        "dice_upper_half": dice,
        "mean_dice": scores.mean_dice(),
        "seconds": time.perf_counter() - started,
        **facts,
    }


def pretrain_on_scan(
    real_data: Path, work: Path, spacing: tuple[float, float, float], steps: int, seed: int = 0
):
    """Self-supervised pretraining on the scan itself (its image only, never its labels).

    recipes/demo.yaml (model, objective, optimiser) with the scan as the only data source, at
    ``spacing``. Returns ``(backbone path, recipe)``; the probe then preprocesses exactly as here.
    """
    from demo_recipes import folder_source, recipe_over_folders

    from voxssl.config.recipe import recipe_from_dict
    from voxssl.data.pipeline import run_preprocess
    from voxssl.train.loop import pretrain

    images = work / "scan" / "images"
    images.mkdir(parents=True, exist_ok=True)
    link = images / "ts_ct.nii.gz"
    if not link.exists():
        link.symlink_to((real_data / "ts_ct.nii.gz").resolve())
    source = folder_source("scan", work / "scan", labels=False)
    settings = recipe_over_folders(
        "demo.yaml", work, [source], 1, name="pretrain-on-scan", seed=seed
    )
    settings["preprocess"]["ct"]["spacing"] = list(spacing)
    settings["pretrain"]["steps"] = steps
    recipe = recipe_from_dict(settings, "recipes/demo.yaml (real-CT benchmark)")
    if not run_preprocess(recipe, progress=False).ok:
        raise SystemExit("preprocessing the real CT failed")
    trained = pretrain(recipe, progress=True)
    if trained.backbone_path is None:
        raise SystemExit("pretraining did not write a backbone")
    return trained.backbone_path, recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-data", type=Path, default=REAL_DATA)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 3.0, 3.0))
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument(
        "--projection",
        type=int,
        default=16,
        help="Channels per level of the random backbone's embedding.",
    )
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--feature-cache", choices=["auto", "true", "false"], default="auto")
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="Also pretrain recipes/demo.yaml's model on the scan's image (no labels) for this many "
        "steps and probe it beside the random init.",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="Working folder of --pretrain-steps (default: temporary).",
    )
    parser.add_argument(
        "--no-readme", action="store_true", help="Do not touch benchmarks/README.md."
    )
    args = parser.parse_args(argv)
    if args.pretrain_steps and args.weights != "random":
        parser.error("--pretrain-steps pretrains its own backbone: drop --weights")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.real_data / "ts_ct.nii.gz").is_file():
        print(f"real data not found at {args.real_data}", file=sys.stderr)
        return 2
    cache = {"auto": "auto", "true": True, "false": False}[args.feature_cache]
    common = {
        "spacing": tuple(args.spacing),
        "steps": args.steps,
        "base": args.base,
        "levels": args.levels,
        "projection": args.projection,
        "lr": args.lr,
        "feature_cache": cache,
    }
    if args.pretrain_steps:
        with tempfile.TemporaryDirectory(prefix="real_ct_probe_") as tmp:
            started = time.perf_counter()
            backbone, recipe = pretrain_on_scan(
                args.real_data, args.work or Path(tmp), tuple(args.spacing), args.pretrain_steps
            )
            pretrain_seconds = time.perf_counter() - started
            result = run(
                args.real_data, weights=str(backbone), preprocess=recipe.preprocess, **common
            )
        result["backbone"] = (
            f"recipes/demo.yaml pretrained on this scan ({args.pretrain_steps} steps, no labels)"
        )
        result["pretrain_seconds"] = pretrain_seconds
        result["random_init"] = run(
            args.real_data, weights="random", preprocess=recipe.preprocess, **common
        )
    else:
        result = run(args.real_data, weights=args.weights, **common)
    result["date"] = time.strftime("%Y-%m-%d")
    result["machine"] = f"{platform.machine()} CPU x{os.cpu_count()}"
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.utils.markdown_section import replace_section

    atomic_write_text(RESULTS, json.dumps(result, indent=2) + "\n")
    if not args.no_readme:
        replace_section(README, SECTION, markdown_section(result))
    print(json.dumps(result, indent=1))
    return 0


def markdown_section(result: dict) -> str:
    baseline = result.get(
        "random_init"
    )  # with --pretrain-steps: the random-init arm beside the pretrained one
    pretrain = (
        f"; pretraining on the scan's image {result['pretrain_seconds']:.0f} s" if baseline else ""
    )
    lines = [
        "## Real CT smoke: probe on the labels below an axial cut (`benchmarks/real_ct_probe.py`)",
        "",
        f"{result['scan']} ({'x'.join(map(str, result['scan_shape']))}) preprocessed to "
        f"{'x'.join(f'{v:g}' for v in result['spacing_mm'])} mm ({'x'.join(map(str, result['preprocessed_shape']))}); "
        f"backbone: {result['backbone']}; {result['head']}, {result['steps']} steps of batch {result['batch_size']} x "
        f"{'x'.join(map(str, result['patch']))}, lr {result['lr']}, feature cache {result['feature_cache']}; trained on the "
        f"labels below axial slice {result['cut_slice']}, scored above it; probe {result['seconds']:.0f} s{pretrain}; "
        f"{result['machine']}, {result['date']}. A pipeline check on real anatomy (TotalSegmentator labels as "
        "reference), not a paper number.",
        "",
    ]
    if baseline:
        lines += ["| organ | Dice % pretrained on the scan | Dice % random init |", "|---|---|---|"]
    else:
        lines += ["| organ | Dice % (above the cut) |", "|---|---|"]
    for organ, value in result["dice_upper_half"].items():
        row = f"| {organ} | {_pct(value)} |"
        lines.append(row + (f" {_pct(baseline['dice_upper_half'][organ])} |" if baseline else ""))
    mean = f"| **mean** | **{_pct(result['mean_dice'])}** |"
    lines.append(mean + (f" **{_pct(baseline['mean_dice'])}** |" if baseline else ""))
    return "\n".join(lines)


def _pct(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
