"""``voxssl classify train | eval`` from the CLI: cache slices (folds by case) and 2D folders
(binary and multi-class, fine-tune), best-validation-loss models, reports, re-evaluation."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from voxssl.cli import app


def _run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_linear_probe_on_cache_slices_then_eval(classify_recipe, tiny_encoder, tmp_path):
    recipe = classify_recipe("probe")
    result = _run("classify", "train", recipe, "--weights", tiny_encoder, "-q")
    run_dir = tmp_path / "runs" / "probe"
    assert "AUC over 3 fold(s):" in result.output
    report = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    assert report["classes"] == ["no_liver", "liver"] and report["positive_class"] == "liver"
    aucs = [f["auc"] for f in report["folds"]]
    assert len(aucs) == 3 and all(0.0 <= a <= 1.0 for a in aucs)
    assert report["summary"]["auc_over_folds"]["mean"] == pytest.approx(np.mean(aucs))
    assert report["summary"]["auc_over_folds"]["std"] == pytest.approx(np.std(aucs))
    assert "| **mean ± std** |" in (run_dir / "results.md").read_text(encoding="utf-8")
    # folds split cases, never the slices of one scan
    splits = json.loads((run_dir / "splits.json").read_text(encoding="utf-8"))
    for fold in splits["folds"]:
        assert not set(fold["test"]) & (set(fold["train"]) | set(fold["val"]))
        rows = list(csv.DictReader((run_dir / f"fold{fold['index']}" / "predictions.csv").open()))
        assert {row["id"].split("#")[0] for row in rows} == set(fold["test"])
        history = json.loads((run_dir / f"fold{fold['index']}" / "history.json").read_text())
        best = min(history, key=lambda h: h["val_loss"])["epoch"]
        assert report["folds"][fold["index"]]["best_epoch"] == best  # lowest validation loss
    # a fold model carries its head and classes, and its backbone serves as an encoder
    from voxssl.classify.model import load_classifier
    from voxssl.models.vit import load_vit

    model, plan = load_classifier(run_dir / "fold0" / "model.safetensors")
    assert plan.kind == "classification" and model.spec.class_names == ("no_liver", "liver")
    load_vit(run_dir / "fold0" / "model.safetensors")

    result = _run("classify", "eval", recipe, "--weights", run_dir)
    again = json.loads((run_dir / "eval" / "results.json").read_text(encoding="utf-8"))
    assert [f["auc"] for f in again["folds"]] == pytest.approx(aucs)
    # one model on every slice (an external test set)
    out = tmp_path / "external"
    _run(
        "classify",
        "eval",
        recipe,
        "--weights",
        run_dir / "fold1" / "model.safetensors",
        "--out",
        out,
    )
    external = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert external["folds"][0]["test_images"] == sum(report["class_counts"].values())


def test_fine_tune_on_binary_and_multiclass_folders(
    classify_recipe, tiny_encoder, tmp_path, images2d
):
    root = images2d.write_class_folder(tmp_path / "discs", per_class=6)
    data = {"kind": "folder", "root": str(root), "classes": ["dark", "bright"]}
    recipe = classify_recipe("folder", mode="fine_tune", head="mlp", data=data, epochs=2)
    _run("classify", "train", recipe, "--weights", tiny_encoder, "-q")
    report = json.loads((tmp_path / "runs" / "folder" / "results.json").read_text(encoding="utf-8"))
    assert report["classes"] == ["dark", "bright"] and report["mode"] == "fine_tune"
    for fold in report["folds"]:  # stratified: both classes in every test fold
        assert fold["class_counts"]["test"] == {"dark": 2, "bright": 2}

    images2d.write_class_folder(tmp_path / "discs3", per_class=6)
    for index in range(6):
        images2d.write_image(tmp_path / "discs3" / "grey" / f"g{index}.png", np.full((48, 40), 0.5))
    data = {"kind": "folder", "root": str(tmp_path / "discs3")}
    recipe = classify_recipe("three", mode="fine_tune", data=data, epochs=1)
    result = _run("classify", "train", recipe, "--weights", tiny_encoder, "-q")
    report = json.loads((tmp_path / "runs" / "three" / "results.json").read_text(encoding="utf-8"))
    assert report["classes"] == ["bright", "dark", "grey"]
    assert set(report["folds"][0]["per_class"]) == {"bright", "dark", "grey"}
    assert "grey:" in result.output
    table = (tmp_path / "runs" / "three" / "results.md").read_text(encoding="utf-8")
    assert "| fold | AUC | test images | best epoch | bright | dark | grey |" in table


def test_errors_name_what_is_wrong(classify_recipe, tiny_encoder, tmp_path, capsys):
    from voxssl.cli import main

    recipe = classify_recipe("err")
    with pytest.raises(SystemExit) as exit_:
        main(["classify", "train", str(recipe), "--weights", str(tmp_path / "missing")])
    assert exit_.value.code == 1
    assert "missing: no such file or folder" in capsys.readouterr().err
    bad = classify_recipe(
        "bad", data={"kind": "cache", "task": "contains", "organs": ["liver", "spleen"]}
    )
    with pytest.raises(SystemExit):
        main(["classify", "train", str(bad), "--weights", str(tiny_encoder)])
    assert "exactly one organ" in capsys.readouterr().err


def test_released_weights_come_from_the_offline_cache(tiny_dinov2_folder, monkeypatch):
    import shutil

    from voxssl.classify.protocol import load_encoder
    from voxssl.fewshot.dinov2 import cached_weights_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the network
    shutil.copytree(tiny_dinov2_folder, cached_weights_dir("small"))  # $VOXSSL_HOME (a tmp dir)
    model, origin = load_encoder("dinov2:small")
    assert origin == "released DINOv2-small" and model.config.hidden_size == 32
