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
) -> dict:
    """Run the slice-split probe; returns per-organ Dice (upper half) and facts."""
    import nibabel as nib
    import torch

    from voxssl.config.data import CTPreprocessConfig, PreprocessConfig
    from voxssl.config.downstream import HeadConfig, ProbeConfig
    from voxssl.config.model import ModelConfig
    from voxssl.data.readers import read_volume
    from voxssl.data.vocabulary import organ_name
    from voxssl.eval.slice_split import organs_in_both_halves, slice_split_probe

    image_path, label_path = real_data / "ts_ct.nii.gz", real_data / "ts_ct_label_btcv.nii.gz"
    ras_label = np.rint(read_volume(label_path).data).astype(np.uint8)
    organs = organs_in_both_halves(ras_label, list(range(1, 14)))
    preprocess = PreprocessConfig(ct=CTPreprocessConfig(spacing=spacing))
    cfg = ProbeConfig(
        classes=organs, patch_size=patch, batch_size=batch_size, steps=steps, lr=lr, log_every=max(steps // 5, 1),
        sw_roi_size=(128, 128, 64), device="auto", head=HeadConfig(kind="linear", feature_norm="batch"),
        feature_cache=feature_cache,
    )
    if weights == "random":
        from voxssl.models.build import build_backbone

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = build_backbone(ModelConfig(preset="hierarchical", base_channels=base, num_levels=levels,
                                                  projection_channels=projection))
        described = f"random init hierarchical base {base}, {levels} levels, {projection} channels per level"
    else:
        from voxssl.eval.protocol import resolve_weights_path
        from voxssl.models.weights import load_backbone

        backbone, _ = load_backbone(resolve_weights_path(weights), expect={"architecture.in_channels": 1})
        described = weights
    started = time.perf_counter()
    scores, facts = slice_split_probe(image_path, label_path, "ct", preprocess, cfg, backbone.eval(), seed=seed)
    dice = {organ_name(k): (None if not np.isfinite(v) else round(float(v), 4)) for k, v in scores.dice.items()}
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real-data", type=Path, default=REAL_DATA)
    parser.add_argument("--weights", default="random")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--spacing", type=float, nargs=3, default=(3.0, 3.0, 3.0))
    parser.add_argument("--base", type=int, default=8)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--projection", type=int, default=16, help="Channels per level of the random backbone's embedding.")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--feature-cache", choices=["auto", "true", "false"], default="auto")
    parser.add_argument("--no-readme", action="store_true", help="Do not touch benchmarks/README.md.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (args.real_data / "ts_ct.nii.gz").is_file():
        print(f"real data not found at {args.real_data}", file=sys.stderr)
        return 2
    cache = {"auto": "auto", "true": True, "false": False}[args.feature_cache]
    result = run(args.real_data, tuple(args.spacing), args.steps, weights=args.weights, base=args.base, levels=args.levels,
                 projection=args.projection,
                 lr=args.lr, feature_cache=cache)
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
    lines = [
        "## Real CT smoke: probe on one half of the slices (`benchmarks/real_ct_probe.py`)",
        "",
        f"{result['scan']} ({'x'.join(map(str, result['scan_shape']))}) preprocessed to "
        f"{'x'.join(f'{v:g}' for v in result['spacing_mm'])} mm ({'x'.join(map(str, result['preprocessed_shape']))}); "
        f"backbone: {result['backbone']}; {result['head']}, {result['steps']} steps of batch {result['batch_size']} x "
        f"{'x'.join(map(str, result['patch']))}, lr {result['lr']}, feature cache {result['feature_cache']}; trained on the "
        f"slices below axial slice {result['cut_slice']}, scored above it; {result['seconds']:.0f} s, {result['machine']}, "
        f"{result['date']}. A pipeline check on real anatomy (TotalSegmentator labels as reference), not a paper number.",
        "",
        "| organ | Dice % (above the cut) |",
        "|---|---|",
    ]
    for organ, value in result["dice_upper_half"].items():
        lines.append(f"| {organ} | {'n/a' if value is None else f'{100 * value:.1f}'} |")
    lines.append(f"| **mean** | **{100 * result['mean_dice']:.1f}** |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
