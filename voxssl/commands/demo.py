"""``voxssl demo``: the whole pipeline on generated phantoms, end to end, on a laptop CPU.

phantoms -> preprocess -> pretrain -> linear probe of the pretrained backbone and of the same
architecture randomly initialised (the baseline), using recipes/demo.yaml and
recipes/probe_demo.yaml exactly as the individual verbs would. Prints a pretraining summary and
the two Dice tables side by side.

Every stage reuses what an earlier demo run left with the same settings: identical phantoms are
not rewritten, preprocessed cases are skipped, a finished pretraining is reused (an interrupted one
resumes from its last checkpoint), and finished probe folds are kept. A second run therefore only
prints the results again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer

from voxssl.commands.common import (
    OVERRIDES_OPTION,
    QUIET_OPTION,
    IntTriple,
    command,
    triple_option,
)
from voxssl.commands.phantoms import CASES_HELP

#: Written by the demo beside the pretraining run: losses and wall time, shown again on reuse.
PRETRAIN_SUMMARY = "demo_pretrain_summary.json"
STAGES = 5
#: The demo's probes run on this fold only (overridable with --set probe.cv.folds=...).
DEMO_FOLDS = "probe.cv.folds=[0]"


def demo(
    recipes_dir: Path = typer.Option(
        Path("recipes"),
        "--recipes",
        metavar="DIR",
        file_okay=False,
        help="Folder holding demo.yaml and probe_demo.yaml.",
    ),
    n_phantoms: int = typer.Option(8, "--cases", "-n", min=2, metavar="N", help=CASES_HELP),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the phantom generator."),
    shape: IntTriple | None = triple_option(
        "--shape",
        int,
        "Phantom voxels X,Y,Z (default 160,128,48); a smaller grid makes a quicker, coarser demo.",
    ),
    overrides: list[str] = OVERRIDES_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Run phantoms -> preprocess -> pretrain -> linear probe, pretrained and random init.

    --set overrides go to each recipe that has their section (data.*, model.* to both, pretrain.*
    to demo.yaml, probe.* to probe_demo.yaml). Outputs: data/phantoms, cache/demo and runs/ under
    the current folder (--set output_dir=DIR moves the runs).
    """
    from voxssl.config.recipe import load_recipe, require_section
    from voxssl.errors import ConfigError

    pretrain_path, probe_path = recipes_dir / "demo.yaml", recipes_dir / "probe_demo.yaml"
    for path in (pretrain_path, probe_path):
        if not path.is_file():
            raise ConfigError(
                f"{path} not found: run `voxssl demo` from the voxssl repository root or pass --recipes DIR"
            )
    recipe = load_recipe(pretrain_path, _applicable(overrides, pretrain_path))
    # both probes on fold 0 of the recipe's 2-fold split: the comparison costs what one 2-fold
    # probe costs (a few CPU minutes); --set probe.cv.folds=null runs every fold
    probe_overrides = [DEMO_FOLDS, *_applicable(overrides, probe_path)]
    probe_recipe = load_recipe(probe_path, probe_overrides)
    pretrain_cfg = require_section(recipe, "pretrain", "demo")
    probe_cfg = require_section(probe_recipe, "probe", "demo")
    if not recipe.data.sources:
        raise ConfigError(f"{pretrain_path}: data.sources is empty")
    phantom_root = recipe.data.sources[0].root

    from voxssl.data.phantoms import write_phantom_dataset
    from voxssl.data.pipeline import run_preprocess
    from voxssl.errors import DataError
    from voxssl.eval.protocol import RANDOM_INIT

    _stage(1, f"{n_phantoms} CT phantoms in {phantom_root}")
    write_phantom_dataset(
        phantom_root, n=n_phantoms, modality="ct", seed=seed, shape=shape, progress=not quiet
    )

    _stage(2, f"preprocess into {recipe.data.cache_dir}")
    summary = run_preprocess(recipe, progress=not quiet)
    typer.echo(summary.describe())
    if not summary.ok:
        raise DataError(f"{len(summary.failed)} phantom case(s) failed to preprocess")

    preset = recipe.model.preset if recipe.model else ""
    _stage(3, f"pretrain the {preset} backbone ({pretrain_cfg.steps} steps) in {recipe.run_dir}")
    backbone, pretraining = _pretrain(recipe, quiet)

    _stage(4, f"linear probe of the pretrained backbone in {probe_recipe.run_dir}")
    pretrained = _probe(probe_recipe, probe_cfg, str(backbone), quiet)

    baseline_recipe = load_recipe(
        probe_path, [*probe_overrides, f"name={probe_recipe.name}-random"]
    )
    _stage(5, f"the baseline: the same probe on a random init, in {baseline_recipe.run_dir}")
    baseline = _probe(baseline_recipe, baseline_recipe.probe, RANDOM_INIT, quiet)

    typer.echo("")
    typer.echo(_pretraining_line(pretraining))
    typer.echo("")
    typer.echo(_comparison_table(pretrained, baseline, probe_cfg.cv))
    typer.echo("")
    typer.echo(f"pretrained backbone: {backbone}")
    typer.echo(f"probe results:       {probe_recipe.run_dir}/results.md")
    typer.echo(f"baseline results:    {baseline_recipe.run_dir}/results.md")
    typer.echo(f"TensorBoard:         tensorboard --logdir {recipe.output_dir}")


def _pretrain(recipe, quiet: bool) -> tuple[Path, dict[str, Any] | None]:
    """The demo's pretrained backbone: reused when an earlier demo run finished it with the same
    recipe, resumed when one was interrupted, trained otherwise."""
    from voxssl.checkpoint_layout import latest_checkpoint
    from voxssl.config.recipe import recipe_to_dict
    from voxssl.errors import CheckpointError, ConfigError
    from voxssl.models.weights import read_plan
    from voxssl.train.loop import BACKBONE_FILE, pretrain
    from voxssl.utils.atomic import atomic_write_text

    run_dir = Path(recipe.run_dir)
    backbone = run_dir / BACKBONE_FILE
    summary_file = run_dir / PRETRAIN_SUMMARY
    other_settings = (
        f"{run_dir} holds a pretraining run with other settings; remove it, or pass --set "
        f"output_dir=OTHER to keep it and run the demo elsewhere"
    )
    if backbone.is_file():
        if _normalised(read_plan(backbone).recipe) != _normalised(recipe_to_dict(recipe)):
            raise ConfigError(other_settings)
        typer.echo(f"reusing {backbone} (pretrained by an earlier demo run with these settings)")
        if summary_file.is_file():
            return backbone, json.loads(summary_file.read_text(encoding="utf-8"))
        return backbone, None
    resume = latest_checkpoint(run_dir) is not None
    if resume:
        typer.echo(f"resuming the interrupted pretraining in {run_dir}")
    started = time.perf_counter()
    try:
        result = pretrain(recipe, resume=resume, progress=not quiet)
    except CheckpointError as err:
        raise ConfigError(f"{other_settings} ({err})") from None
    if result.backbone_path is None:
        raise ConfigError(f"pretraining in {run_dir} stopped before its last step")
    losses = [result.losses[s] for s in sorted(result.losses)]
    window = max(1, min(10, len(losses) // 4))
    terms = sorted({k for t in result.terms.values() for k in t})
    steps = sorted(result.terms)

    def mean(values):
        return float(sum(values) / len(values)) if values else float("nan")

    summary = {
        "steps": result.last_step,
        "start_step": result.start_step,
        "seconds": time.perf_counter() - started,
        "loss_start": mean(losses[:window]),
        "loss_end": mean(losses[-window:]),
        "terms": {
            k: [
                mean([result.terms[s][k] for s in steps[:window] if k in result.terms[s]]),
                mean([result.terms[s][k] for s in steps[-window:] if k in result.terms[s]]),
            ]
            for k in terms
        },
        "averaged_steps": window,
    }
    atomic_write_text(summary_file, json.dumps(summary, indent=1) + "\n")
    return result.backbone_path, summary


def _probe(probe_recipe, cfg, weights: str, quiet: bool) -> dict[str, Any]:
    """Probe once; a second demo run keeps the folds an earlier run finished."""
    from voxssl.errors import ConfigError
    from voxssl.eval.protocol import run_downstream
    from voxssl.eval.run_results import RunMismatchError, RunMode, earlier_outputs

    run_dir = probe_recipe.run_dir
    mode: RunMode = "resume" if earlier_outputs(run_dir) else "new"
    if mode == "resume":
        typer.echo(f"reusing the finished folds in {run_dir}")
    try:
        return run_downstream(
            probe_recipe, cfg, weights, "linear-probe", progress=not quiet, mode=mode
        )
    except RunMismatchError as err:
        raise ConfigError(
            f"{run_dir} holds a probe run with other settings; remove it, or pass --set "
            f"output_dir=OTHER to keep it and run the demo elsewhere ({err})"
        ) from None


def _pretraining_line(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "pretraining: reused (no summary recorded)"
    minutes, seconds = divmod(round(summary["seconds"]), 60)
    resumed = f", resumed at step {summary['start_step']}" if summary["start_step"] else ""
    terms = ", ".join(f"{k} {a:.3f} -> {b:.3f}" for k, (a, b) in summary["terms"].items())
    return (
        f"pretraining: {summary['steps']} steps in {minutes} min {seconds:02d} s{resumed}; "
        f"loss {summary['loss_start']:.3f} -> {summary['loss_end']:.3f} (mean of the first and "
        f"last {summary['averaged_steps']} steps{'; ' + terms if terms else ''})"
    )


def _comparison_table(pretrained: dict, baseline: dict, cv) -> str:
    """Dice % per organ, pretrained beside random init (mean ± std over the test cases)."""

    def cell(stats: dict) -> str:
        if not stats["n"]:
            return "-"
        return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"

    cases = pretrained["mean_dice"]["over_cases"]["n"]
    folds = sorted(pretrained["folds"])
    split = f"{cv.scheme} split" + (f", k={cv.k}" if cv.scheme == "kfold" else "")
    lines = [
        f"Linear probe, Dice % on the test phantoms (mean ± std over {cases} cases; "
        f"{', '.join(folds)} of a {split}):",
        "",
        "| organ | pretrained | random init |",
        "|---|---|---|",
    ]
    for organ, entry in pretrained["organs"].items():
        other = baseline["organs"].get(organ)
        lines.append(
            f"| {organ} | {cell(entry['dice_over_cases'])} | "
            f"{cell(other['dice_over_cases']) if other else '-'} |"
        )
    lines.append(
        f"| **mean** | **{cell(pretrained['mean_dice']['over_cases'])}** | "
        f"**{cell(baseline['mean_dice']['over_cases'])}** |"
    )
    return "\n".join(lines)


def _normalised(data: Any) -> Any:
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _applicable(overrides: list[str] | None, recipe_path: Path) -> list[str]:
    """Keep the overrides whose top-level section the recipe file has (or that are top-level keys)."""
    from voxssl.config.recipe import read_recipe_data

    sections = {key for key, value in read_recipe_data(recipe_path).items() if value is not None}
    return [
        o
        for o in overrides or []
        if "." not in o.split("=", 1)[0] or o.split(".", 1)[0] in sections
    ]


def _stage(index: int, text: str) -> None:
    typer.secho(f"[{index}/{STAGES}] {text}", bold=True)


def register(app: typer.Typer) -> None:
    command(
        app,
        "demo",
        demo,
        ["voxssl demo", "voxssl demo --cases 4 --set pretrain.steps=100 --quiet"],
    )
