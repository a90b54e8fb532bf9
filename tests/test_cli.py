"""The command line as a user meets it: every registered verb (new ones are picked up from the typer
app, nothing to list here) gives typer's short usage message and exit code 2 on a bad option,
readable ``--help`` with real examples, and imports neither torch nor numpy before it has checked
its arguments and recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import typer

from voxssl.cli import app, main

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "monai", "transformers", "numpy", "scipy", "nibabel", "SimpleITK")


def registered_verbs() -> list[tuple[str, ...]]:
    """Every leaf command of the ``voxssl`` app, e.g. ``("weights", "info")``."""

    def walk(command, path):
        subcommands = getattr(command, "commands", None)
        if not subcommands:
            return [path]
        return [leaf for name, sub in subcommands.items() for leaf in walk(sub, (*path, name))]

    return walk(typer.main.get_command(app), ())


VERBS = registered_verbs()


def _ids(verbs):
    return [" ".join(v) for v in verbs]


def _run_main(argv, capsys) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep
    )
    env["COLUMNS"] = "100"
    return env


def voxssl_command() -> list[str]:
    """The installed console script when there is one (what a user types), else ``-m voxssl.cli``."""
    script = Path(sys.executable).parent / "voxssl"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "voxssl.cli"]


def run_voxssl(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*voxssl_command(), *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=_environment(),
        cwd=cwd,
        timeout=120,
    )


def assert_usage_error(code: int, err: str, needle: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert needle in err
    assert len(err.strip().splitlines()) <= 8, err  # typer's usage line, hint and one boxed message


def test_the_verbs_are_found():
    names = _ids(VERBS)
    for verb in ("pretrain", "linear-probe", "predict", "demo", "few-shot train", "weights info"):
        assert verb in names


@pytest.mark.parametrize("verb", VERBS, ids=_ids(VERBS))
def test_unknown_option_is_a_usage_error(verb, capsys):
    code, _, err = _run_main([*verb, "--bogus"], capsys)
    assert_usage_error(code, err, "No such option: --bogus")
    assert f"voxssl {' '.join(verb)} --help" in err  # typer's hint names the verb


@pytest.mark.parametrize("verb", VERBS, ids=_ids(VERBS))
def test_help_is_readable_and_has_examples(verb, capsys):
    code, out, err = _run_main([*verb, "--help"], capsys)
    assert code == 0 and not err
    assert "<bool>" not in out, "flags take metavar='' (voxssl.commands.common.flag)"
    options = [line for line in out.splitlines() if "│ --" in line or "│ *  --" in line]
    assert not [line for line in options if "list[" in line], "give repeatable options a metavar"
    assert "Examples:" in out
    example_lines = out.split("Examples:", 1)[1].splitlines()
    assert any(line.strip().startswith(f"voxssl {' '.join(verb)}") for line in example_lines)


RECIPE_VERBS = [
    v
    for v in VERBS
    if any(
        p.name == "recipe" and p.param_type_name == "argument"
        for p in typer.main.get_command(app).commands[v[0]].params
        + (typer.main.get_command(app).commands[v[0]].commands[v[1]].params if len(v) > 1 else [])
    )
]


def _required_options(verb) -> list[str]:
    """Dummy values for the verb's required options, so that the recipe is what fails."""
    command = typer.main.get_command(app)
    for name in verb:
        command = command.commands[name]
    args = []
    for param in command.params:
        if param.param_type_name == "option" and (param.required or "--weights" in param.opts):
            args += [param.opts[0], *["x"] * max(param.nargs, 1)]
    return args


def test_recipe_verbs_are_found():
    assert {"preprocess", "pretrain", "linear-probe", "fine-tune", "few-shot train"} <= set(
        _ids(RECIPE_VERBS)
    )


@pytest.mark.parametrize("verb", RECIPE_VERBS, ids=_ids(RECIPE_VERBS))
def test_a_missing_recipe_is_a_usage_error(verb, tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    code, _, err = _run_main([*verb, str(missing), *_required_options(verb)], capsys)
    assert_usage_error(code, err, "nope.yaml")
    assert "does not exist" in err


def test_usage_errors_from_a_real_shell(tmp_path):
    """The reported cases, through the console script in a subprocess: no traceback, exit 2."""
    cases = [
        (["--bogus"], "No such option: --bogus"),
        (["bogusverb"], "No such command 'bogusverb'"),
        (["pretrain", "recipes/demo.yaml", "--resume=true"], "does not take a value"),
        (["phantoms", str(tmp_path / "p"), "--shape", "32,32"], "X,Y,Z"),
        (["phantoms", str(tmp_path / "p"), "--shape", "32", "32", "16"], "got '32'"),
        (["pretrain", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["predict", "a.nii.gz", "-w", "w", "-o", "o", "--device", "tpu"], "'tpu' is not one of"),
        (["few-shot", "segment", "--modality", "pet"], "'pet' is not one of"),
    ]
    for args, needle in cases:
        done = run_voxssl(*args)
        assert_usage_error(done.returncode, done.stderr, needle)
        assert not done.stdout
    assert not (tmp_path / "p").exists()


def test_user_errors_are_one_line_with_exit_code_1(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbogus_key: 1\n", encoding="utf-8")
    done = run_voxssl("pretrain", str(bad))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"error: {bad}: unknown key 'bogus_key'")


def test_help_and_argument_errors_import_no_heavy_module(tmp_path):
    """``voxssl --help``, every verb's ``--help`` and usage errors, and a recipe error, in one fresh
    interpreter: none of them may import torch, numpy, MONAI... (they take seconds to import)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbogus_key: 1\n", encoding="utf-8")
    script = textwrap.dedent(
        f"""
        import json, sys
        from voxssl.cli import main
        from tests.test_cli import RECIPE_VERBS, VERBS, _required_options

        def run(argv):
            try:
                main(argv)
            except SystemExit as exit_:
                return exit_.code
            return 0

        codes = {{"--help": run(["--help"])}}
        for verb in VERBS:
            codes[" ".join(verb) + " --help"] = run([*verb, "--help"])
            codes[" ".join(verb) + " --bogus"] = run([*verb, "--bogus"])
        for verb in RECIPE_VERBS:
            codes[" ".join(verb) + " bad recipe"] = run([*verb, {str(bad)!r}, *_required_options(verb)])
        heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]
        print(json.dumps({{"codes": codes, "heavy": heavy}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=_environment(),
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    codes = report["codes"]
    assert codes["--help"] == 0
    assert all(code == 0 for name, code in codes.items() if name.endswith("--help"))
    assert all(code == 2 for name, code in codes.items() if name.endswith("--bogus"))
    assert all(code == 1 for name, code in codes.items() if name.endswith("bad recipe"))


def test_version_and_success_return_normally(capsys):
    main(["--version"])  # success: main returns (exit code 0), no SystemExit
    assert capsys.readouterr().out.startswith("voxssl ")


def test_set_takes_triples_like_the_options():
    from voxssl.config.loader import parse_override

    assert parse_override("preprocess.ct.spacing=1.5,1.5,2") == (
        ["preprocess", "ct", "spacing"],
        [1.5, 1.5, 2],
    )
    assert parse_override("probe.patch_size=[64, 64, 16]")[1] == [64, 64, 16]
    assert parse_override("name=a,b")[1] == "a,b"  # only numbers become a list


def test_weights_info_of_a_file_is_a_readable_summary(tmp_path):
    from voxssl.config.data import PreprocessConfig
    from voxssl.config.model import ModelConfig
    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan, preprocessing_plan
    from voxssl.models.weights import save_weights

    config = ModelConfig(
        preset="hierarchical", base_channels=4, num_levels=3, projection_channels=4
    )
    backbone = build_backbone(config)
    plan = Plan.for_model(
        config,
        preprocessing_plan("ct", PreprocessConfig(), 1),
        {"name": "tiny", "pretrain": {"steps": 7}},
    )
    path = save_weights(tmp_path / "tiny.safetensors", backbone.state_dict(), plan)
    parameters = sum(p.numel() for p in backbone.state_dict().values())

    done = run_voxssl("weights", "info", str(path))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"file:          {path}")
    assert f"{parameters / 1e6:.2f} M parameters" in lines[0]
    text = done.stdout
    assert "architecture:  hierarchical FPN, 4 channels x 3 levels, each projected to 4" in text
    assert "preprocessing: ct, 1 x 1 x 2 mm, window -1350 .. 1000 HU" in text
    assert "trained:       recipe 'tiny', 7 pretraining steps" in text
    assert "{" not in text  # no raw JSON unless asked

    raw = run_voxssl("weights", "info", str(path), "--json")
    assert raw.returncode == 0
    assert json.loads(raw.stdout)["architecture"]["base_channels"] == 4
