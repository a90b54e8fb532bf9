"""Pretraining speed: voxssl's step against the plain eager reference step, the real loop's
throughput, the data pipeline's rate, peak memory and the loss trajectory.

Presets (model + objective from the recipe): ``demo`` (recipes/demo.yaml), ``vox2vec``
(recipes/vox2vec.yaml), ``hierarchical`` (recipes/ct.yaml, the seed paper's model).

Shapes: ``paper`` = the papers' step, 10 pairs of 128x128x32 crops with 1024 positives per pair;
``cpu`` = a CPU-sized step: 1 pair of 64x64x32 with 1024 positives (the demo: its recipe's 4
pairs of 32x32x16 with 256 positives). On a CPU the 10 pairs of the paper shape need more than
the development machine's 24 GB for vox2vec and hierarchical, so ``--paper-pairs-cpu`` (default 1)
pairs of the paper's crops are run there; every row records the pairs it ran.

Data: CT phantoms written straight into a temporary cache (values scaled through the CT window
[-1350, 1000] HU, body = above -500 HU), large enough for 128x128x32 crops.

Per preset and shape, each measurement runs in its own child process (so a peak RSS belongs to
one measurement, not to everything before it):

1. ``ratio``: voxssl's step (:func:`voxssl.train.loop.train_step` on the model, optimizer and
   memory layout the loop builds: views in one batch with per-view batch-norm statistics,
   channels-last levels, fused Adam) against the plain eager step of
   benchmarks/eager_reference.py (vox2vec's layer layout written plainly: one forward per view,
   contiguous NCDHW, default Adam), both from the same weights on the same batches drawn by the
   real data pipeline, equivariance off (the reference has no such term). Pair ``i`` runs both
   steps on batch ``i``, the order alternating from pair to pair, after one warm-up step of
   each; reported: the median of the pairwise time ratios (reference / voxssl) and their range,
   and the first loss of both (equal up to float rounding: tests/train/test_fast_step.py).
2. ``loop``: the real loop (:func:`voxssl.train.loop.pretrain`: data workers, augmentations, the
   recipe's whole objective, Adam, logging) for ``--warmup`` + ``--steps`` steps: steps/s over
   the measured steps, data-wait fraction, peak RSS (GPU: ``torch.cuda.max_memory_allocated``),
   the projected time of 50K steps, and the loss trajectory (every step's loss and terms). A
   loss that becomes non-finite or exceeds ``--divergence-factor`` x the first loss flags the
   row as diverged, and the script exits with status 1 after writing its results.
3. ``data``: the recipe's data pipeline alone (:meth:`PretrainPairs.batch`: crops, the recipe's
   augmentations, positives, collation) in one process on one thread: pairs/s of one data
   worker, then the pipeline's capacity (one worker's rate x the workers that get a core of
   their own) against what the loop consumes (its pairs/s): this must be >= 2.

Timings are wall-clock; the machine may be shared, so the load average is recorded before and
after every measurement, and ratios come only from steps run side by side in one process.

Usage::

    .venv/bin/python benchmarks/pretrain_throughput.py                 # all presets, both shapes
    .venv/bin/python benchmarks/pretrain_throughput.py --preset vox2vec --shape cpu --ratio-pairs 9
    .venv/bin/python benchmarks/pretrain_throughput.py --device cuda --steps 30 --num-workers 10

Results are merged into benchmarks/results/pretrain_throughput.json (keyed preset/shape/device);
the README section ``pretrain_throughput`` is rewritten from that file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from voxssl.data.phantoms.cache import write_phantom_cache

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "pretrain_throughput.json"
README = REPO / "benchmarks" / "README.md"
SECTION = "pretrain_throughput"
RECIPES = {
    "demo": REPO / "recipes" / "demo.yaml",
    "vox2vec": REPO / "recipes" / "vox2vec.yaml",
    "hierarchical": REPO / "recipes" / "ct.yaml",
}
PHANTOM_SHAPE = (192, 160, 64)  # 400x320x240 mm at ~2x2x3.75 mm: room for 128x128x32 crops
PAPER = {"pairs": 10, "patch": (128, 128, 32), "positives": 1024}
CPU_SHAPE = {"pairs": 1, "patch": (64, 64, 32), "positives": 1024}
PROJECTED_STEPS = 50_000


def step_shape(preset: str, shape: str, device: str, paper_pairs_cpu: int) -> dict:
    """Pairs, patch and positives of a (preset, shape) measurement on ``device``."""
    if shape == "paper":
        pairs = PAPER["pairs"]
        if device == "cpu" and preset != "demo":
            pairs = paper_pairs_cpu
        return {"pairs": pairs, "patch": PAPER["patch"], "positives": PAPER["positives"]}
    if preset == "demo":
        return {}  # the recipe's own step
    return dict(CPU_SHAPE)


def load(args: argparse.Namespace, cache: Path, out_dir: Path, extra: list[str] = ()):
    """The recipe of ``args.preset`` with the benchmark's overrides."""
    from voxssl.config.recipe import load_recipe

    shape = step_shape(args.preset, args.shape, args.device, args.paper_pairs_cpu)
    total = args.warmup + args.steps
    overrides = [
        f"data.cache_dir={cache}",
        f"output_dir={out_dir}",
        f"name=bench-{args.preset}-{args.shape}",
        f"pretrain.steps={total}",
        f"pretrain.checkpoint_every={total}",
        f"pretrain.log_every={total}",
        f"pretrain.image_every={total}",
        f"pretrain.device={args.device}",
        f"pretrain.cpu_threads={args.threads}",
        f"pretrain.num_workers={args.num_workers}",
    ]
    if shape:
        overrides += [
            f"pretrain.pairs_per_step={shape['pairs']}",
            f"pretrain.pairs_per_volume={shape['pairs']}",
            f"pretrain.patch_size=[{','.join(map(str, shape['patch']))}]",
            f"pretrain.positives_per_pair={shape['positives']}",
        ]
    if args.compile:
        overrides.append("pretrain.compile=true")
    return load_recipe(RECIPES[args.preset], overrides + list(extra))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def dataset_of(recipe):
    from voxssl.data.pretrain_dataset import PairBatchSpec, PretrainPairs
    from voxssl.train.builders import build_view_generator, select_cases

    cfg = recipe.pretrain
    cases = select_cases(recipe, cfg)
    views = build_view_generator(recipe, cfg, cases[0].modality)
    spec = PairBatchSpec(cfg.pairs_per_step, cfg.pairs_per_volume, cfg.positives_per_pair)
    return PretrainPairs(cases, views, spec, seed=recipe.seed, end_step=10**9)


# --- child measurements ----------------------------------------------------------------------


def measure_ratio(args: argparse.Namespace, cache: Path, out_dir: Path) -> dict:
    """voxssl's step vs the eager reference step, alternating on the same batches."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import eager_reference as ref

    from voxssl.device import resolve_device
    from voxssl.models.build import build_pretrain_model
    from voxssl.train.loop import to_device, train_step
    from voxssl.train.objective import PretrainObjective
    from voxssl.train.performance import apply_memory_layout, build_adam

    recipe = load(args, cache, out_dir, ["pretrain.equivariance.weight=0"])
    cfg, device = recipe.pretrain, resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(recipe.seed)
    model = apply_memory_layout(build_pretrain_model(recipe.model).to(device), device)
    reference = ref.ReferenceModel.from_config(recipe.model).to(device)
    reference.load_state_dict(model.state_dict())
    optimizer = build_adam(
        model.parameters(), device, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    ref_optimizer = ref.make_optimizer(reference, cfg)
    objective = PretrainObjective(cfg)
    dataset = dataset_of(recipe)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run_voxssl(batch):
        sync()
        started = time.perf_counter()
        out, _ = train_step(model, objective, optimizer, batch, cfg.grad_clip, cfg.amp)
        loss = float(out.loss)
        sync()
        return time.perf_counter() - started, loss

    def run_reference(batch):
        sync()
        started = time.perf_counter()
        loss = float(ref.reference_step(reference, ref_optimizer, batch, cfg))  # fp32 (papers)
        sync()
        return time.perf_counter() - started, loss

    batches = [to_device(dataset.batch(step), device) for step in range(args.ratio_pairs + 1)]
    _, first_ref = run_reference(batches[0])  # warm-up (allocator, oneDNN primitive caches)
    _, first_voxssl = run_voxssl(batches[0])
    pairs = []
    for i, batch in enumerate(batches[1:]):
        if i % 2 == 0:
            t_ref, _ = run_reference(batch)
            t_voxssl, _ = run_voxssl(batch)
        else:
            t_voxssl, _ = run_voxssl(batch)
            t_ref, _ = run_reference(batch)
        pairs.append({"reference_s": t_ref, "voxssl_s": t_voxssl, "ratio": t_ref / t_voxssl})
    ratios = [p["ratio"] for p in pairs]
    return {
        "pairs": pairs,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "reference_s_per_step": statistics.median(p["reference_s"] for p in pairs),
        "voxssl_s_per_step": statistics.median(p["voxssl_s"] for p in pairs),
        "first_loss_reference": first_ref,
        "first_loss_voxssl": first_voxssl,
        "peak_rss_gb_both_models": peak_rss_gb(),
    }


def measure_loop(args: argparse.Namespace, cache: Path, out_dir: Path) -> dict:
    from voxssl.train.loop import pretrain

    recipe = load(args, cache, out_dir)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    error = None
    try:
        result = pretrain(recipe, progress=False)
    except FloatingPointError as err:
        error, result = str(err), None
    wall = time.perf_counter() - started
    row = {"wall_s_including_setup": wall, "error": error}
    if result is None:
        return row
    measured = [s for s in sorted(result.step_seconds) if s > args.warmup]
    seconds = sum(result.step_seconds[s] for s in measured)
    waited = sum(result.data_wait_seconds[s] for s in measured)
    cfg = recipe.pretrain
    row.update(
        {
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "measured_steps": len(measured),
            "seconds_per_step": seconds / len(measured),
            "steps_per_s": len(measured) / seconds,
            "pairs_per_s": len(measured) * cfg.pairs_per_step / seconds,
            "data_wait_fraction": waited / seconds,
            "projected_hours_50k_steps": PROJECTED_STEPS * seconds / len(measured) / 3600,
            "losses": [result.losses[s] for s in sorted(result.losses)],
            "terms": {
                name: [result.terms[s][name] for s in sorted(result.terms)]
                for name in result.terms[min(result.terms)]
            },
            "grad_norms": [result.grad_norms[s] for s in sorted(result.grad_norms)],
            "peak_rss_gb": peak_rss_gb(),
            "peak_rss_gb_data_workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            / 1e6,
        }
    )
    if args.device == "cuda":
        row["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        row["gpu"] = torch.cuda.get_device_name()
    return row


def measure_data(args: argparse.Namespace, cache: Path, out_dir: Path) -> dict:
    """One data worker's pairs/s: the recipe's batches built in this process on one thread."""
    torch.set_num_threads(1)
    recipe = load(args, cache, out_dir)
    dataset = dataset_of(recipe)
    dataset.batch(0)  # opens the memory maps
    started = time.perf_counter()
    count = 0
    for step in range(1, args.data_batches + 1):
        count += len(dataset.batch(step)["case_ids"])
    seconds = time.perf_counter() - started
    return {"pairs_per_s_one_worker": count / seconds, "batches": args.data_batches}


CHILDREN = {"ratio": measure_ratio, "loop": measure_loop, "data": measure_data}


def child_main(args: argparse.Namespace) -> int:
    result = CHILDREN[args.child](args, Path(args.cache), Path(args.run_dir))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_child(kind: str, args: argparse.Namespace, cache: Path, run_dir: Path) -> dict:
    """Run one measurement in a fresh interpreter; returns its JSON (or the error)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--cache",
        str(cache),
        "--run-dir",
        str(run_dir / f"{args.preset}-{args.shape}-{kind}"),
        "--preset",
        args.preset,
        "--shape",
        args.shape,
        *args.passthrough,
    ]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"{kind} child failed ({proc.returncode}): {' | '.join(tail)}"}
    result = json.loads(found[-1][len("RESULT ") :])
    result["load_average_before"] = load_before
    result["load_average_after"] = os.getloadavg()[0]
    result["child_wall_s"] = time.perf_counter() - started
    return result


def divergence(losses: list[float], factor: float) -> str | None:
    """Why a loss trajectory counts as diverged (None when it does not): a non-finite loss at any
    step, or a curve that ENDS above ``factor`` x its first loss (the mean of its last quarter,
    at least the last step). A spike the curve comes back from is not a divergence (see
    :func:`spike`): the paper objective's reconstruction term jumps after Adam's first steps
    and recovers within ~10 steps (benchmarks/README.md, pretraining stability)."""
    if not losses:
        return "no step completed"
    for step, loss in enumerate(losses, start=1):
        if not math.isfinite(loss):
            return f"loss {loss} at step {step}"
    tail = losses[-max(1, len(losses) // 4) :]
    end = sum(tail) / len(tail)
    if end > factor * losses[0]:
        steps = (
            f"steps {len(losses) - len(tail) + 1}-{len(losses)}"
            if len(tail) > 1
            else (f"step {len(losses)}")
        )
        return f"loss {end:.4g} at {steps} > {factor:g} x the first loss {losses[0]:.4g}"
    return None


def spike(losses: list[float], factor: float) -> str | None:
    """The peak of a trajectory when it exceeds ``factor`` x the first loss (reported beside the
    verdict of :func:`divergence`, so a transient jump is visible without being called one)."""
    finite = [x for x in losses if math.isfinite(x)]
    if len(finite) < 2:
        return None
    peak = max(range(len(finite)), key=finite.__getitem__)
    if finite[peak] <= factor * finite[0]:
        return None
    return (
        f"peak {finite[peak]:.4g} at step {peak + 1} ({finite[peak] / finite[0]:.1f}x the first "
        f"loss), {finite[-1]:.4g} at step {len(finite)}"
    )


def measure(args: argparse.Namespace, cache: Path, run_dir: Path) -> dict:
    shape = step_shape(args.preset, args.shape, args.device, args.paper_pairs_cpu)
    row: dict = {"preset": args.preset, "shape": args.shape, "device": args.device}
    kinds = [k for k in ("data", "loop", "ratio") if k not in args.skip]
    for kind in kinds:
        print(f"[{args.preset}/{args.shape}] {kind} ...", flush=True)
        row[kind] = run_child(kind, args, cache, run_dir)
    loop, data = row.get("loop", {}), row.get("data", {})
    if "losses" in loop:
        row["divergence"] = divergence(loop["losses"], args.divergence_factor)
        row["spike"] = spike(loop["losses"], args.divergence_factor)
    elif "loop" in row:
        row["divergence"] = loop.get("error")
    if "pairs_per_s" in loop and "pairs_per_s_one_worker" in data:
        workers = max(1, min(args.num_workers, (os.cpu_count() or 1) - 1))
        row["data_capacity_pairs_per_s"] = data["pairs_per_s_one_worker"] * workers
        row["data_workers_counted"] = workers
        row["data_over_consumption"] = row["data_capacity_pairs_per_s"] / loop["pairs_per_s"]
    row["step"] = shape or "recipe"
    return row


def fmt(value, spec: str = ".2f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def markdown_section(results: dict) -> str:
    rows = sorted(results.values(), key=lambda r: (r["device"], r["shape"], r["preset"]))
    lines = [
        "## Pretraining speed and throughput (`benchmarks/pretrain_throughput.py`)",
        "",
        "Protocol in the script's docstring. **ratio**: voxssl's step against the plain eager "
        "step of the same FPN and loss (benchmarks/eager_reference.py: vox2vec's layout, one "
        "forward per view, contiguous NCDHW, default Adam), from the same weights on the same "
        "batches, alternating, one process; median of the pairwise ratios (range). **loop**: "
        "the real `pretrain()` with the recipe's whole objective. **data**: the pipeline's "
        "capacity (one worker's pairs/s x workers with a core of their own) over what the loop "
        "consumes. Peak RSS is that of the loop's training process.",
        "",
        "| preset | shape (pairs x crop, positives) | device, threads | ratio vs eager (pairs) "
        "| s/step eager -> voxssl | loop steps/s | 50K steps | peak memory | data / consumed "
        "| loss (first -> last) | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio, loop, data = r.get("ratio", {}), r.get("loop", {}), r.get("data", {})
        step = r.get("step")
        shape = (
            f"{r['shape']}: {step['pairs']} x {'x'.join(map(str, step['patch']))}, "
            f"{step['positives']}"
            if isinstance(step, dict)
            else f"{r['shape']}: recipe (4 x 32x32x16, 256)"
        )
        ratio_cell = (
            f"**{ratio['ratio_median']:.2f}x** ({ratio['ratio_min']:.2f}-{ratio['ratio_max']:.2f}, "
            f"{len(ratio['pairs'])})"
            if "ratio_median" in ratio
            else ratio.get("error", "-")
        )
        times = (
            f"{ratio['reference_s_per_step']:.2f} -> {ratio['voxssl_s_per_step']:.2f}"
            if "ratio_median" in ratio
            else "-"
        )
        memory = (
            f"{loop['peak_gpu_memory_gb']:.1f} GB GPU"
            if "peak_gpu_memory_gb" in loop
            else f"{fmt(loop.get('peak_rss_gb'))} GB RSS"
        )
        losses = loop.get("losses") or []
        loss_cell = f"{losses[0]:.3g} -> {losses[-1]:.3g}" if losses else loop.get("error", "-")
        if r.get("divergence"):
            loss_cell += f" **DIVERGED** ({r['divergence']})"
        elif r.get("spike"):
            loss_cell += f" (spike: {r['spike']})"
        loads = [
            x.get(k)
            for x in (ratio, loop)
            for k in ("load_average_before", "load_average_after")
            if x.get(k) is not None
        ]
        lines.append(
            f"| {r['preset']} | {shape} | {r.get('device_name', r['device'])}, "
            f"{r.get('threads', '-')} | {ratio_cell} | {times} | {fmt(loop.get('steps_per_s'), '.3f')} "
            f"| {fmt(loop.get('projected_hours_50k_steps'), '.0f')} h | {memory} "
            f"| {fmt(r.get('data_over_consumption'), '.1f')}x "
            f"({fmt(data.get('pairs_per_s_one_worker'))} pairs/s/worker) | {loss_cell} "
            f"| {fmt(min(loads) if loads else None, '.1f')}-{fmt(max(loads) if loads else None, '.1f')} |"
        )
    lines += [
        "",
        "Raw numbers (every pair's times, every step's loss terms): "
        "`benchmarks/results/pretrain_throughput.json`.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--preset", choices=[*RECIPES, "all"], default="all", help="default: all three"
    )
    parser.add_argument("--shape", choices=["cpu", "paper", "all"], default="all")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=3, help="measured loop steps (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--ratio-pairs", type=int, default=5, help="side-by-side pairs (cpu shape)")
    parser.add_argument(
        "--paper-ratio-pairs", type=int, default=1, help="side-by-side pairs at the paper shape"
    )
    parser.add_argument(
        "--paper-pairs-cpu",
        type=int,
        default=1,
        help="pairs per step of the paper shape on CPU for vox2vec/hierarchical (10 need > 24 GB)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the trainer")
    parser.add_argument("--num-workers", type=int, default=1, help="data workers of the loop")
    parser.add_argument("--data-batches", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="pretrain.compile=true")
    parser.add_argument("--divergence-factor", type=float, default=2.0)
    parser.add_argument("--skip", nargs="*", default=[], choices=list(CHILDREN))
    parser.add_argument("--phantoms", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    # internal: one measurement in a child process
    parser.add_argument("--child", choices=list(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args)
    args.passthrough = [
        "--device",
        args.device,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--num-workers",
        str(args.num_workers),
        "--paper-pairs-cpu",
        str(args.paper_pairs_cpu),
        "--data-batches",
        str(args.data_batches),
        *(["--compile"] if args.compile else []),
    ]
    presets = list(RECIPES) if args.preset == "all" else [args.preset]
    shapes = ["cpu", "paper"] if args.shape == "all" else [args.shape]
    results = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {}
    results = {k: v for k, v in results.items() if isinstance(v, dict) and "preset" in v}
    device_name = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()} CPU"
    )
    diverged = []
    with tempfile.TemporaryDirectory(prefix="voxssl-bench-") as tmp:
        cache = Path(tmp) / "cache"
        write_phantom_cache(cache, args.phantoms, PHANTOM_SHAPE)
        for shape in shapes:
            for preset in presets:
                sub = argparse.Namespace(**vars(args))
                sub.preset, sub.shape = preset, shape
                pairs = args.ratio_pairs if shape == "cpu" else args.paper_ratio_pairs
                sub.passthrough = [*args.passthrough, "--ratio-pairs", str(pairs)]
                sub.ratio_pairs = pairs
                row = measure(sub, cache, Path(tmp) / "runs")
                row.update(
                    {
                        "device_name": device_name,
                        "threads": args.threads,
                        "num_workers": args.num_workers,
                        "host": platform.node(),
                        "cpu_count": os.cpu_count(),
                        "machine_shared": args.device == "cpu",
                        "torch": torch.__version__,
                        "date": time.strftime("%Y-%m-%d"),
                    }
                )
                results[f"{preset}/{shape}/{args.device}"] = row
                summary = {
                    k: row.get(k)
                    for k in ("preset", "shape", "divergence", "data_over_consumption")
                }
                summary["ratio"] = row.get("ratio", {}).get("ratio_median")
                summary["steps_per_s"] = row.get("loop", {}).get("steps_per_s")
                print(json.dumps(summary), flush=True)
                if row.get("divergence"):
                    diverged.append(f"{preset}/{shape}: {row['divergence']}")
                from voxssl.utils.atomic import atomic_write_text

                atomic_write_text(args.out, json.dumps(results, indent=1, sort_keys=True) + "\n")
    if not args.no_readme:
        from voxssl.utils.markdown_section import replace_section

        replace_section(README, SECTION, markdown_section(results))
    print(markdown_section(results))
    if diverged:
        print("DIVERGED: " + "; ".join(diverged), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
