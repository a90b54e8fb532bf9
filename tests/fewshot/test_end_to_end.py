"""The demo pipeline on six phantoms: superpixels, train, the 1-shot protocol, NIfTI outputs, CLI segment."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import yaml
from typer.testing import CliRunner

from voxssl.eval.metrics import dice


def test_train_eval_segment(phantom_cache, tmp_path):
    from voxssl.cli import app

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(phantom_cache["data"]), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(
        app, ["few-shot", "train", str(recipe_path), "--group", "1", "--fold", "0"]
    )
    assert result.exit_code == 0, result.output
    run_dir = phantom_cache["recipe"].run_dir
    weights = run_dir / "models" / "group1-fold0.safetensors"
    assert weights.is_file() and not weights.with_suffix(".state.pt").exists()

    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "few-shot",
            "eval",
            str(recipe_path),
            "--group",
            "1",
            "--fold",
            "0",
            "--out",
            str(out),
            "--set",
            "fewshot.eval.cca=3d",
        ],
    )
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert "| spleen | liver | mean |" in (out / "results.md").read_text(encoding="utf-8")
    scans = results["scans"]
    assert {s["organ"] for s in scans} == {"spleen", "liver"} and {s["case"] for s in scans} == {
        "p00",
        "p01",
    }
    assert all(s["support"] == "p02" for s in scans)  # first scan outside fold 0
    per_organ = {
        o: np.mean([s["dice"] for s in scans if s["organ"] == o]) for o in ("spleen", "liver")
    }
    assert np.isclose(results["dice_mean"], np.mean(list(per_organ.values())))
    print(f"demo Dice: {results['dice_per_organ']}, mean {results['dice_mean']:.3f}")

    # The written prediction is on the original grid and reproduces the reported Dice.
    from voxssl.data.cache import open_cache

    case = open_cache(phantom_cache["cache_dir"]).case("phantoms", "p00")
    original_label = nib.load(phantom_cache["root"] / "labels" / "p00.nii.gz")
    z0 = case.meta["crop_box"][2][0]
    truth = np.asarray(original_label.dataobj)
    for scan in (s for s in scans if s["case"] == "p00"):
        organ = {"spleen": 1, "liver": 6}[scan["organ"]]
        prediction = nib.load(out / "predictions" / f"p00_{scan['organ']}.nii.gz")
        assert prediction.shape == original_label.shape
        np.testing.assert_allclose(prediction.affine, original_label.affine, atol=1e-4)
        predicted = np.asarray(prediction.dataobj)
        zs = np.flatnonzero((np.asarray(case.label()) == organ).any(axis=(0, 1))) + z0
        assert np.isclose(
            dice(predicted[:, :, zs] == organ, truth[:, :, zs] == organ), scan["dice"], atol=0.02
        )
    assert max(s["dice"] for s in scans) > 0.2  # the trained model finds the organs

    # A user's 1-shot segmentation of the liver on a new scan, from one labelled scan.
    root = phantom_cache["root"]
    result = runner.invoke(
        app,
        [
            "few-shot",
            "segment",
            "--support",
            str(root / "images" / "p05.nii.gz"),
            str(root / "labels" / "p05.nii.gz"),
            "--label-value",
            "6",
            "--query",
            str(root / "images" / "p01.nii.gz"),
            "--out",
            str(tmp_path / "seg"),
            "--weights",
            str(weights),
            "--modality",
            "ct",
        ],
    )
    assert result.exit_code == 0, result.output
    segmented = nib.load(tmp_path / "seg" / "p01_fewshot.nii.gz")
    assert segmented.shape == original_label.shape and np.asarray(segmented.dataobj).any()
