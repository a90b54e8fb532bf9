"""Inference speed: ``voxssl predict`` of a 512x512x150 CT, seconds and peak RSS.

Protocol:

1. the scan: the 512x512x150 CT phantom of benchmarks/preprocess.py (int16 HU, 0.8x0.8x2.5 mm,
   LPS, gzip NIfTI);
2. the weights: a segmentation model of the chosen architecture with random weights (speed and
   memory do not depend on the values), written as the ``model.safetensors`` a probe run
   writes: ``demo`` = recipes/probe_demo.yaml (demo backbone, 2.5x2.5x5 mm, linear head, 9
   organs, 128x128x48 windows, overlap 0.5); ``paper`` = recipes/ct.yaml's backbone and
   preprocessing (hierarchical, 47.6 M parameters, 1x1x2 mm) with recipes/probe_btcv.yaml's
   linear head (13 organs, 128x128x32 windows, overlap 0.5);
3. ``voxssl predict SCAN --weights W --out O --device DEVICE`` (plus ``--sw-batch-size``,
   ``--overlap``, ``--amp`` when given) in a fresh process, ``--repeats`` times: wall seconds of
   the whole command (imports, reading, preprocessing, sliding window, resampling back, writing)
   and the peak RSS of that process (``getrusage(RUSAGE_CHILDREN)`` of a wrapper that runs only
   it);
4. side by side in one process, the sliding window alone (``predict_probabilities`` on the
   preprocessed volume) with the backbone's feature maps contiguous and with the device's
   memory layout (channels-last levels on CPU, as ``voxssl predict`` runs), alternating over
   ``--layout-pairs`` pairs: the median of the pairwise ratios and their range.

Usage::

    .venv/bin/python benchmarks/predict_speed.py                           # demo, CPU
    .venv/bin/python benchmarks/predict_speed.py --arch paper --device cuda --sw-batch-size 4

Results are merged into benchmarks/results/predict_speed.json (keyed arch/device/options); the
README section ``predict_speed`` is rewritten from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "predict_speed.json"
README = REPO / "benchmarks" / "README.md"
SECTION = "predict_speed"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from preprocess import SHAPE, SPACING, write_phantom  # noqa: E402

ARCHES = {
    "demo": {"recipe": "probe_demo.yaml", "section": "probe"},
    "paper": {"recipe": "probe_btcv.yaml", "section": "probe", "model": "ct.yaml"},
}

WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
print("WRAPPED", code, time.perf_counter() - started,
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def write_weights(arch: str, path: Path) -> dict:
    """A random-init segmentation model of ``arch`` saved as a probe would save it."""
    import torch

    from voxssl.config.recipe import load_recipe
    from voxssl.eval.protocol import segmentation_spec
    from voxssl.models.build import build_backbone, level_channels
    from voxssl.models.plan import Plan, preprocessing_plan
    from voxssl.models.segmentation import SegmentationModel
    from voxssl.models.segmentation_weights import save_segmentation_weights
    from voxssl.vocabulary import organ_id

    spec_of = ARCHES[arch]
    recipe = load_recipe(REPO / "recipes" / spec_of["recipe"])
    architecture = recipe
    if "model" in spec_of:  # the backbone and preprocessing of the pretraining recipe
        architecture = load_recipe(REPO / "recipes" / spec_of["model"])
    cfg = getattr(recipe, spec_of["section"])
    class_ids = [organ_id(name) for name in cfg.classes]
    torch.manual_seed(0)
    backbone = build_backbone(architecture.model)
    spec = segmentation_spec(cfg, class_ids, level_channels(architecture.model))
    model = SegmentationModel(backbone, spec.build_head(), loss_kind=spec.loss)
    plan = Plan.for_model(
        architecture.model, preprocessing_plan("ct", architecture.preprocess, 1), kind="backbone"
    )
    save_segmentation_weights(path, model, spec, plan)
    return {
        "parameters": sum(p.numel() for p in backbone.parameters()),
        "spacing_mm": list(architecture.preprocess.ct.spacing),
        "roi": list(spec.sw_roi_size),
        "overlap": spec.sw_overlap,
        "classes": len(class_ids),
    }


def run_predict(args: argparse.Namespace, scan: Path, weights: Path, out: Path) -> dict:
    command = [
        sys.executable,
        "-m",
        "voxssl.cli",
        "predict",
        str(scan),
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--device",
        args.device,
        "-q",
    ]
    if args.sw_batch_size is not None:
        command += ["--sw-batch-size", str(args.sw_batch_size)]
    if args.overlap is not None:
        command += ["--overlap", str(args.overlap)]
    if args.amp is not None:
        command += ["--amp", args.amp]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True, env=env
    )
    line = [x for x in proc.stdout.splitlines() if x.startswith("WRAPPED ")]
    if not line:
        raise RuntimeError(f"predict failed: {proc.stderr.strip().splitlines()[-3:]}")
    _, code, seconds, rss_kb = line[-1].split()
    if int(code) != 0:
        raise RuntimeError(f"voxssl predict exited {code}: {proc.stderr.strip()[-500:]}")
    return {
        "seconds": float(seconds),
        "peak_rss_gb": int(rss_kb) / 1e6,
        "load_average": [load_before, os.getloadavg()[0]],
    }


def layout_ratio(args: argparse.Namespace, scan: Path, weights: Path) -> dict:
    """Sliding window alone, contiguous vs the device's layout, alternating in this process."""
    import torch

    from voxssl.data.preprocess import preprocess_volume
    from voxssl.data.readers import read_volume
    from voxssl.device import resolve_device
    from voxssl.eval.inference import predict_probabilities
    from voxssl.eval.predict import preprocess_config_from_plan
    from voxssl.models.fpn import apply_memory_layout
    from voxssl.models.segmentation_weights import load_segmentation_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model, spec, plan = load_segmentation_model(weights, device=device)
    modality, cfg = preprocess_config_from_plan(plan, str(weights))
    image, _, _, _ = preprocess_volume(read_volume(scan), modality, cfg)
    overlap = spec.sw_overlap if args.overlap is None else args.overlap
    batch = args.sw_batch_size or 2

    def run(layout: bool):
        if layout:
            apply_memory_layout(model, device)
        else:
            model.backbone.channels_last_min_voxels = None
        started = time.perf_counter()
        probs = predict_probabilities(
            model, image, spec.sw_roi_size, overlap, spec.sw_mode, batch, device, args.amp != "fp32"
        )
        return time.perf_counter() - started, probs

    _, reference = run(False)
    _, laid_out = run(True)
    difference = float((reference - laid_out).abs().max())
    pairs = []
    for i in range(args.layout_pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        times = {layout: run(layout)[0] for layout in order}
        pairs.append({"contiguous_s": times[False], "layout_s": times[True]})
    ratios = [p["contiguous_s"] / p["layout_s"] for p in pairs]
    return {
        "preprocessed_shape": list(image.shape[-3:]),
        "pairs": pairs,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "max_probability_difference": difference,
    }


def markdown_section(results: dict) -> str:
    lines = [
        "## Inference: `voxssl predict` of a 512x512x150 CT (`benchmarks/predict_speed.py`)",
        "",
        "Protocol in the script's docstring: the 512x512x150 CT phantom (0.8x0.8x2.5 mm, gzip "
        "NIfTI), a random-init segmentation model saved as a probe saves it, the whole "
        "`voxssl predict` command in a fresh process (wall seconds, peak RSS of that process); "
        "the layout ratio is the sliding window alone with contiguous feature maps over the "
        "device's layout (channels-last levels on CPU), alternating in one process.",
        "",
        "| architecture | device, threads | windows (roi, overlap, batch) | preprocessed grid "
        "| predict seconds (runs) | peak RSS | layout ratio (pairs) | load avg |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results.values():
        layout = row.get("layout", {})
        runs = row["runs"]
        loads = [x for r in runs for x in r["load_average"]]
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in runs)
        ratio = (
            f"{layout['ratio_median']:.2f}x ({layout['ratio_min']:.2f}-{layout['ratio_max']:.2f}, "
            f"{len(layout['pairs'])})"
            if layout
            else "-"
        )
        lines.append(
            f"| {row['arch']} ({row['weights']['parameters'] / 1e6:.2f} M, "
            f"{'x'.join(f'{s:g}' for s in row['weights']['spacing_mm'])} mm) "
            f"| {row['device_name']}, {row['threads'] or 'default'} "
            f"| {'x'.join(map(str, row['weights']['roi']))}, {row['overlap']:g}, "
            f"{row['sw_batch_size']} | {'x'.join(map(str, layout.get('preprocessed_shape', [])))} "
            f"| **{min(r['seconds'] for r in runs):.1f}** "
            f"({seconds}) "
            f"| {max(r['peak_rss_gb'] for r in runs):.2f} GB | {ratio} "
            f"| {min(loads):.1f}-{max(loads):.1f} |"
        )
    lines += ["", "Raw numbers: `benchmarks/results/predict_speed.json`."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=list(ARCHES), default="demo")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--sw-batch-size", type=int, default=None, help="default: predict's (2)")
    parser.add_argument("--overlap", type=float, default=None, help="default: the weights' own")
    parser.add_argument("--amp", choices=["auto", "bf16", "fp32"], default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--layout-pairs", type=int, default=3, help="0: skip the layout ratio")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of the layout ratio")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory(prefix="voxssl-predict-") as tmp:
        tmp = Path(tmp)
        scan, _, _ = write_phantom(tmp / "scan")
        weights = tmp / "model.safetensors"
        described = write_weights(args.arch, weights)
        runs = [run_predict(args, scan, weights, tmp / f"out{i}") for i in range(args.repeats)]
        row = {
            "arch": args.arch,
            "device": args.device,
            "device_name": torch.cuda.get_device_name()
            if args.device == "cuda"
            else f"{platform.machine()} CPU x{os.cpu_count()}",
            "threads": args.threads,
            "scan": {"shape": list(SHAPE), "spacing_mm": list(SPACING)},
            "weights": described,
            "sw_batch_size": args.sw_batch_size or 2,
            "overlap": described["overlap"] if args.overlap is None else args.overlap,
            "amp": args.amp or "auto",
            "runs": runs,
            "host": platform.node(),
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
        }
        if args.layout_pairs > 0:
            row["layout"] = layout_ratio(args, scan, weights)
    print(json.dumps(row, indent=1))
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    key = f"{args.arch}/{args.device}/batch{row['sw_batch_size']}/overlap{row['overlap']:g}"
    results[key] = row
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.utils.markdown_section import replace_section

    atomic_write_text(args.out, json.dumps(results, indent=1, sort_keys=True) + "\n")
    if not args.no_readme:
        replace_section(README, SECTION, markdown_section(results))
    print(markdown_section(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
