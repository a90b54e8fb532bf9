"""End to end through the CLI on phantoms: linear-probe -> results -> predict; clear user errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from voxssl.cli import main

pytestmark = pytest.mark.cli


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code, capsys.readouterr()


def _run_ok(argv):
    main(argv)  # main returns normally on success


def test_linear_probe_then_predict(phantom_cache, tmp_path):
    folder, recipe, _ = phantom_cache
    _run_ok(["linear-probe", str(recipe), "--weights", "random", "--set", f"output_dir={tmp_path}"])
    run = tmp_path / "probe"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert results["protocol"] == "linear-probe" and len(results["cases"]) == 4
    assert set(results["summary"]["folds"]) == {"fold0", "fold1"}
    assert set(results["cases"][0]["dice"]) == {"liver", "spleen", "right_kidney", "left_kidney"}
    splits = json.loads((run / "splits.json").read_text(encoding="utf-8"))
    tested = sorted(c for f in splits["folds"] for c in f["test"])
    assert tested == [f"ph{i:03d}" for i in range(4)]
    assert (run / "results.md").read_text(encoding="utf-8").startswith("# linear-probe")
    assert (run / "recipe.resolved.yaml").is_file()
    fold0 = run / "fold0"
    case = splits["folds"][0]["test"][0]
    assert (fold0 / "overlays" / f"{case}.png").is_file()
    prediction = nib.load(str(fold0 / "predictions" / f"{case}.nii.gz"))
    source = nib.load(str(folder / "phantoms" / "images" / f"{case}.nii.gz"))
    assert prediction.shape == source.shape
    np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-5)

    # the split file is reusable: a second run with it gets the same folds
    _run_ok(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            f"output_dir={tmp_path / 'again'}",
            "--set",
            f"probe.cv.split_file={run / 'splits.json'}",
            "--set",
            "probe.cv.folds=[1]",
            "--set",
            "probe.write_predictions=false",
            "--set",
            "probe.overlay_slices=0",
        ]
    )
    again = json.loads((tmp_path / "again" / "probe" / "splits.json").read_text(encoding="utf-8"))
    assert again["folds"] == splits["folds"]

    # predict on a new scan with the fold model: same grid and affine as the input
    out = tmp_path / "pred"
    image = folder / "phantoms" / "images" / "ph003.nii.gz"
    _run_ok(
        [
            "predict",
            "--weights",
            str(fold0 / "model.safetensors"),
            str(image),
            "--out",
            str(out),
            "-q",
        ]
    )
    written = nib.load(str(out / "ph003_seg.nii.gz"))
    assert written.shape == nib.load(str(image)).shape
    np.testing.assert_allclose(written.affine, nib.load(str(image)).affine, atol=1e-5)
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1, 2, 3, 6}
    assert (out / "voxssl_organs.ctbl").read_text(encoding="utf-8").count("\n") == 6


def test_predict_warns_on_another_modality_and_fails_cleanly_on_a_corrupt_scan(
    phantom_cache, tmp_path, caplog, capsys
):
    from voxssl.data.phantoms.generate import generate_phantom

    folder, recipe, _ = phantom_cache
    _run_ok(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "probe.cv.folds=[0]",
            "--set",
            "probe.overlay_slices=0",
            "--set",
            "probe.write_predictions=false",
        ]
    )
    weights = tmp_path / "probe" / "fold0" / "model.safetensors"
    mr = generate_phantom(0, "mr", shape=(64, 48, 16))
    mr_path = tmp_path / "mr.nii.gz"
    nib.save(nib.Nifti1Image(mr.image, mr.affine), str(mr_path))
    ct_path = folder / "phantoms" / "images" / "ph001.nii.gz"
    with caplog.at_level("WARNING", logger="voxssl.data.preprocess"):
        _run_ok(
            [
                "predict",
                "--weights",
                str(weights),
                str(ct_path),
                str(mr_path),
                "--out",
                str(tmp_path / "p"),
                "-q",
            ]
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        len(warnings) == 1
        and str(mr_path) in warnings[0]
        and "does not look like CT" in warnings[0]
    )
    assert (
        tmp_path / "p" / "mr_seg.nii.gz"
    ).is_file()  # a warning, not a refusal: the user decides

    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti")
    code, captured = _run(
        ["predict", "--weights", str(weights), str(corrupt), "--out", str(tmp_path / "q"), "-q"],
        capsys,
    )
    assert code == 1 and str(corrupt) in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "q").exists()  # nothing written, not even the colour table


def test_modality_mismatch_rules():
    from voxssl.data.modality_check import modality_mismatch

    ct = np.array([-1024.0, 40.0, 1200.0])
    mr = np.array([0.0, 310.0, 2000.0])
    assert modality_mismatch(ct, "ct") is None and modality_mismatch(mr, "mr") is None
    assert "-1000" in modality_mismatch(mr, "ct") and "rescaled" in modality_mismatch(
        ct + 1024, "ct"
    )
    assert "not negative" in modality_mismatch(ct, "mr")


def test_weights_of_another_architecture_are_a_clear_error(phantom_cache, tmp_path, capsys):
    from voxssl.config.model import ModelConfig
    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan
    from voxssl.models.weights import save_weights

    _, recipe, _ = phantom_cache
    other = ModelConfig(preset="hierarchical", base_channels=8, num_levels=3, projection_channels=4)
    weights = save_weights(
        tmp_path / "other.safetensors", build_backbone(other).state_dict(), Plan.for_model(other)
    )
    code, captured = _run(
        ["linear-probe", str(recipe), "--weights", str(weights), "--set", f"output_dir={tmp_path}"],
        capsys,
    )
    assert code == 1
    assert (
        "error:" in captured.err
        and "architecture.base_channels" in captured.err
        and str(weights) in captured.err
    )

    # backbone weights are not a segmentation model: predict says so
    code, captured = _run(
        ["predict", "--weights", str(weights), str(recipe), "--out", str(tmp_path / "p")], capsys
    )
    assert code == 1 and "segmentation head" in captured.err


def test_cuda_without_a_gpu_is_one_line_naming_the_setting(
    phantom_cache, tmp_path, capsys, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, recipe, _ = phantom_cache
    code, captured = _run(
        [
            *("linear-probe", str(recipe), "--weights", "random"),
            *("--set", f"output_dir={tmp_path}", "--set", "probe.device=cuda"),
        ],
        capsys,
    )
    assert code == 1 and "probe.device is 'cuda' but no CUDA device" in captured.err
    assert "Traceback" not in captured.err


def test_classes_outside_vocabulary_or_unannotated_are_clear_errors(
    phantom_cache, tmp_path, capsys
):
    _, recipe, _ = phantom_cache
    code, captured = _run(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            "probe.classes=[liver, kidneys]",
        ],
        capsys,
    )
    assert code == 1 and "probe" in captured.err and "kidneys" in captured.err
    code, captured = _run(
        ["linear-probe", str(recipe), "--weights", "random", "--set", "probe.classes=[liver, 42]"],
        capsys,
    )
    assert code == 1 and "42" in captured.err
    code, captured = _run(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            "probe.classes=[liver, esophagus]",
            "--set",
            f"output_dir={tmp_path}",
        ],
        capsys,
    )
    assert code == 1 and "esophagus (5)" in captured.err and "annotated in none" in captured.err


def test_label_ids_outside_vocabulary_are_rejected():
    from voxssl.errors import DataError
    from voxssl.eval.sampling import remap_label

    label = np.zeros((4, 4, 4), np.uint8)
    label[0, 0, 0], label[1, 1, 1], label[2, 2, 2] = 6, 255, 77
    with pytest.raises(DataError, match=r"case x: label ids \[77\]"):
        remap_label(label, [6], where="case x")
    label[2, 2, 2] = 1  # a canonical organ that is not a recipe class becomes background
    remapped = remap_label(label, [6], where="case x")
    assert remapped[0, 0, 0] == 1 and remapped[1, 1, 1] == 255 and remapped[2, 2, 2] == 0


def test_feature_cache_errors_name_the_field_and_per_patch_features_still_work(
    phantom_cache, tmp_path, capsys
):
    _, recipe, _ = phantom_cache  # 3-level backbone: cached patches must be multiples of 4
    code, captured = _run(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "probe.feature_cache=true",
            "--set",
            "probe.patch_size=[30, 48, 16]",
        ],
        capsys,
    )
    assert code == 1 and "probe.patch_size" in captured.err and "multiple of 4" in captured.err
    assert "Traceback" not in captured.err
    code, captured = _run(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "probe.feature_cache=true",
            "--set",
            "probe.feature_cache_max_gib=1e-6",
        ],
        capsys,
    )
    assert code == 1 and "feature_cache_max_gib" in captured.err and "Traceback" not in captured.err
    code, captured = _run(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            "probe.feature_cache=sometimes",
        ],
        capsys,
    )
    assert code == 1 and "probe.feature_cache" in captured.err

    # feature_cache: false is vox2vec's per-patch protocol, through the same run
    _run_ok(
        [
            "linear-probe",
            str(recipe),
            "--weights",
            "random",
            "--set",
            f"output_dir={tmp_path / 'patch'}",
            "--set",
            "probe.feature_cache=false",
            "--set",
            "probe.cv.folds=[0]",
            "--set",
            "probe.overlay_slices=0",
            "--set",
            "probe.write_predictions=false",
        ]
    )
    results = json.loads(
        (tmp_path / "patch" / "probe" / "results.json").read_text(encoding="utf-8")
    )
    assert len(results["cases"]) == 2


def test_fine_tune_from_the_cli_and_its_from_scratch_baseline(phantom_cache, tmp_path, capsys):
    import yaml

    from tests.eval.conftest import write_recipe
    from voxssl.config.model import ModelConfig
    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan
    from voxssl.models.weights import read_plan, save_weights

    folder, _, cache_dir = phantom_cache
    recipe = yaml.safe_load(
        write_recipe(tmp_path, folder / "phantoms", cache_dir).read_text(encoding="utf-8")
    )
    del recipe["probe"], recipe["model"]  # the architecture comes from the weights
    recipe["finetune"] = {  # small enough for seconds: the CLI wiring is what is tested here
        "classes": ["liver", "spleen"],
        "head": {"kind": "nonlinear", "hidden_channels": 8},
        "patch_size": [32, 24, 16],
        "sw_roi_size": [64, 48, 16],  # one inference window per phantom
        "batch_size": 1,
        "steps": 6,
        "lr": 0.01,
        "frozen_steps": 2,
        "ramp_steps": 2,
        "backbone_lr_start": 1e-4,
        "log_every": 1,
        "overlay_slices": 0,
        "write_predictions": False,
        "cv": {"scheme": "kfold", "k": 2, "folds": [0]},
    }
    recipe_path = tmp_path / "finetune.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    small = ModelConfig(preset="hierarchical", base_channels=4, num_levels=2, projection_channels=4)
    weights = save_weights(
        tmp_path / "pretrained.safetensors",
        build_backbone(small).state_dict(),
        Plan.for_model(small),
    )

    _run_ok(["fine-tune", str(recipe_path), "--weights", str(weights), "--set", "name=pre"])
    pre = json.loads((tmp_path / "runs" / "pre" / "results.json").read_text(encoding="utf-8"))
    assert (
        pre["protocol"] == "fine-tune"
        and not pre["from_scratch"]
        and pre["weights"] == str(weights)
    )
    history = json.loads(
        (tmp_path / "runs" / "pre" / "fold0" / "history.json").read_text(encoding="utf-8")
    )
    backbone_lr = [entry["lr_backbone"] for entry in history]
    assert (
        backbone_lr[:2] == [0.0, 0.0] and 0 < backbone_lr[2] < backbone_lr[-1] == 0.01
    )  # frozen, then ramped

    # the baseline: same recipe and budget, random init in the architecture of the pretrained weights
    _run_ok(
        [
            "fine-tune",
            str(recipe_path),
            "--weights",
            str(weights),
            "--from-scratch",
            "--set",
            "name=scratch",
        ]
    )
    scratch = json.loads(
        (tmp_path / "runs" / "scratch" / "results.json").read_text(encoding="utf-8")
    )
    assert (
        scratch["from_scratch"]
        and "random init" in scratch["weights"]
        and str(weights) in scratch["weights"]
    )
    plan = read_plan(tmp_path / "runs" / "scratch" / "fold0" / "model.safetensors")
    assert plan.architecture["base_channels"] == 4 and plan.architecture["num_levels"] == 2

    code, captured = _run(["fine-tune", str(recipe_path)], capsys)
    assert (
        code == 2  # a usage error: typer's message
        and "--weights" in captured.err
        and "--from-scratch" in captured.err
        and "Traceback" not in captured.err
    )
