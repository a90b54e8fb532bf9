"""``voxssl demo``: the whole pipeline on generated phantoms, end to end, on a laptop CPU.

phantoms -> preprocess -> pretrain -> linear probe, using recipes/demo.yaml and
recipes/probe_demo.yaml exactly as the individual verbs would; prints the Dice table at the end.
Every stage skips work already done, so a second run only repeats what changed.
"""

from __future__ import annotations

from pathlib import Path

import typer

from voxssl.commands.common import OVERRIDES_OPTION, QUIET_OPTION, command
from voxssl.commands.phantoms import CASES_HELP


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
    overrides: list[str] = OVERRIDES_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Run phantoms -> preprocess -> pretrain -> linear probe and print the Dice table.

    --set overrides apply to both recipes (e.g. --set pretrain.steps=50 is ignored by the probe
    recipe only if it has no such section: keep overrides to shared sections such as data.*).
    """
    from voxssl.config.recipe import load_recipe, require_section
    from voxssl.data.phantoms import write_phantom_dataset
    from voxssl.data.pipeline import run_preprocess
    from voxssl.errors import ConfigError, DataError
    from voxssl.eval.protocol import run_downstream
    from voxssl.train.loop import pretrain

    pretrain_path, probe_path = recipes_dir / "demo.yaml", recipes_dir / "probe_demo.yaml"
    for path in (pretrain_path, probe_path):
        if not path.is_file():
            raise ConfigError(
                f"{path} not found: run `voxssl demo` from the voxssl repository root or pass --recipes DIR"
            )
    recipe = load_recipe(pretrain_path, _applicable(overrides, pretrain_path))
    probe_recipe = load_recipe(probe_path, _applicable(overrides, probe_path))
    if not recipe.data.sources:
        raise ConfigError(f"{pretrain_path}: data.sources is empty")
    phantom_root = recipe.data.sources[0].root

    _stage(1, f"{n_phantoms} CT phantoms in {phantom_root}")
    write_phantom_dataset(phantom_root, n=n_phantoms, modality="ct", seed=seed, progress=not quiet)

    _stage(2, f"preprocess into {recipe.data.cache_dir}")
    summary = run_preprocess(recipe, progress=not quiet)
    if not summary.ok:
        raise DataError(summary.describe())

    _stage(
        3,
        f"pretrain {recipe.model.preset if recipe.model else ''} backbone ({recipe.pretrain.steps} steps)",
    )
    require_section(recipe, "pretrain", "demo")
    result = pretrain(recipe, resume=False, progress=not quiet)

    _stage(4, "linear probe of the pretrained backbone")
    probe_cfg = require_section(probe_recipe, "probe", "demo")
    run_downstream(probe_recipe, probe_cfg, str(result.backbone_path), "linear-probe")
    results_md = probe_recipe.run_dir / "results.md"
    typer.echo(
        results_md.read_text(encoding="utf-8")
        if results_md.is_file()
        else f"(no table at {results_md})"
    )
    typer.echo(f"pretrained backbone: {result.backbone_path}")
    typer.echo(f"probe results:       {probe_recipe.run_dir}")
    typer.echo(f"TensorBoard:         tensorboard --logdir {result.run_dir / 'tensorboard'}")


def _applicable(overrides: list[str] | None, recipe_path: Path) -> list[str]:
    """Keep the overrides whose top-level section the recipe file has (or that are top-level keys)."""
    from voxssl.config.loader import read_yaml

    sections = set(read_yaml(recipe_path))
    return [
        o
        for o in overrides or []
        if "." not in o.split("=", 1)[0] or o.split(".", 1)[0] in sections
    ]


def _stage(index: int, text: str) -> None:
    typer.secho(f"[{index}/4] {text}", bold=True)


def register(app: typer.Typer) -> None:
    command(
        app,
        "demo",
        demo,
        ["voxssl demo", "voxssl demo --cases 4 --set pretrain.steps=20 --quiet"],
    )
