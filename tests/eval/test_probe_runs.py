"""Run folders of linear-probe / fine-tune: an earlier run's results are never silently replaced
(--overwrite replaces them whole, --resume finishes the folds not done), and a run that fails on
its arguments or weights leaves no folder behind."""

from __future__ import annotations

import json

import pytest

from voxssl.cli import main


def _run(argv, capsys) -> tuple[int, str]:
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


def _probe(recipe, out, *extra):
    return [
        "linear-probe",
        recipe,
        "--weights",
        "random",
        "-q",
        "--set",
        f"output_dir={out}",
        "--set",
        "probe.write_predictions=false",
        "--set",
        "probe.overlay_slices=0",
        *extra,
    ]


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text(encoding="utf-8"))


def test_rerun_is_refused_then_overwrite_replaces_the_whole_run(phantom_cache, tmp_path, capsys):
    _, recipe, _ = phantom_cache
    run_dir = tmp_path / "probe"
    assert _run(_probe(recipe, tmp_path), capsys)[0] == 0
    before = (run_dir / "results.json").read_bytes()
    assert set(_results(run_dir)["summary"]["folds"]) == {"fold0", "fold1"}

    code, err = _run(_probe(recipe, tmp_path, "--set", "probe.steps=2"), capsys)
    assert code == 1 and "Traceback" not in err
    assert str(run_dir) in err and "--overwrite" in err and "--resume" in err
    assert (run_dir / "results.json").read_bytes() == before  # untouched

    code, _ = _run(
        [
            *_probe(recipe, tmp_path, "--set", "probe.steps=2", "--set", "probe.cv.folds=[0]"),
            "--overwrite",
        ],
        capsys,
    )
    assert code == 0
    results = _results(run_dir)
    assert set(results["summary"]["folds"]) == {"fold0"} and results["steps"] == 2
    assert not (run_dir / "fold1").exists()  # no stale fold beside a table that says "1 fold"
    assert "1 fold(s)" in (run_dir / "results.md").read_text(encoding="utf-8")

    code, err = _run([*_probe(recipe, tmp_path), "--overwrite", "--resume"], capsys)
    assert code == 2 and "--overwrite" in err  # a usage error: one or the other


def test_resume_keeps_finished_folds_and_redoes_the_interrupted_one(
    phantom_cache, tmp_path, capsys, monkeypatch
):
    from voxssl.eval import protocol

    _, recipe, _ = phantom_cache
    run_dir = tmp_path / "probe"
    real_run_fold = protocol.run_fold
    trained: list[str] = []

    def crash_on_fold1(*args, **kwargs):
        fold = args[3]
        trained.append(fold.name)
        if fold.name == "fold1":
            (kwargs.get("fold_dir") or args[8]).mkdir(parents=True, exist_ok=True)
            raise KeyboardInterrupt  # the user pressed Ctrl-C during fold1
        return real_run_fold(*args, **kwargs)

    monkeypatch.setattr(protocol, "run_fold", crash_on_fold1)
    code, _ = _run(_probe(recipe, tmp_path), capsys)
    assert code == 130 and trained == ["fold0", "fold1"]
    assert (run_dir / "fold0" / "scores.json").is_file()
    assert not (run_dir / "results.json").exists()
    fold0_model = (run_dir / "fold0" / "model.safetensors").read_bytes()

    # a changed recipe cannot resume: the finished folds would not be comparable
    code, err = _run([*_probe(recipe, tmp_path, "--set", "probe.lr=0.5"), "--resume"], capsys)
    assert code == 1 and "probe.lr" in err and "--overwrite" in err

    trained.clear()
    monkeypatch.setattr(
        protocol,
        "run_fold",
        lambda *a, **k: (trained.append(a[3].name), real_run_fold(*a, **k))[1],
    )
    code, _ = _run([*_probe(recipe, tmp_path), "--resume"], capsys)
    assert code == 0
    assert trained == ["fold1"]  # fold0 was kept, not trained again
    assert (run_dir / "fold0" / "model.safetensors").read_bytes() == fold0_model
    results = _results(run_dir)
    assert set(results["summary"]["folds"]) == {"fold0", "fold1"}
    assert len(results["cases"]) == 4

    # the same result as a run that was never interrupted
    code, _ = _run(_probe(recipe, tmp_path / "straight"), capsys)
    assert code == 0
    straight = _results(tmp_path / "straight" / "probe")
    for key in ("over_cases", "over_folds"):
        assert straight["summary"]["mean_dice"][key]["mean"] == pytest.approx(
            results["summary"]["mean_dice"][key]["mean"], rel=1e-5
        )


def test_resume_without_an_earlier_run_is_a_clear_error(phantom_cache, tmp_path, capsys):
    _, recipe, _ = phantom_cache
    code, err = _run([*_probe(recipe, tmp_path), "--resume"], capsys)
    assert code == 1 and "nothing to resume" in err
    assert not (tmp_path / "probe").exists()


def test_bad_weights_leave_no_run_folder(phantom_cache, tmp_path, capsys):
    _, recipe, _ = phantom_cache
    argv = _probe(recipe, tmp_path)
    argv[argv.index("random")] = str(tmp_path / "missing.safetensors")
    code, err = _run(argv, capsys)
    assert code == 1 and "missing.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "probe").exists()

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not safetensors")
    argv[argv.index(str(tmp_path / "missing.safetensors"))] = str(corrupt)
    code, err = _run(argv, capsys)
    assert code == 1 and str(corrupt) in err
    assert not (tmp_path / "probe").exists()


def test_a_class_no_training_case_labels_is_warned_about(tmp_path, capsys, caplog):
    import nibabel as nib
    import numpy as np

    from .conftest import write_phantoms, write_recipe

    root = write_phantoms(tmp_path / "phantoms")
    for name in ("ph000", "ph001"):  # the training cases of the holdout split lose their spleen
        path = root / "labels" / f"{name}.nii.gz"
        label = nib.load(str(path))
        data = np.asarray(label.dataobj).copy()
        data[data == 1] = 0
        nib.save(nib.Nifti1Image(data, label.affine), str(path))
    recipe = write_recipe(tmp_path, root, tmp_path / "cache")
    assert _run(["preprocess", recipe, "-q"], capsys)[0] == 0
    with caplog.at_level("WARNING", logger="voxssl.eval.protocol"):
        code, _ = _run(
            _probe(
                recipe,
                tmp_path / "runs",
                "--set",
                "probe.cv={scheme: holdout, test_cases: [ph002, ph003]}",
                "--set",
                "probe.steps=2",
            ),
            capsys,
        )
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("fold0" in w and "spleen (1)" in w and "no training case" in w for w in warnings), (
        warnings
    )
    assert not any("liver" in w for w in warnings)
