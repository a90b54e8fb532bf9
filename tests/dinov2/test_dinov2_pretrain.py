"""``voxssl dinov2 pretrain`` end to end on phantom slices and 2D folders: outputs, TensorBoard,
exact resume, continuing from checkpoints, the encoder in the few-shot recipe, export, errors."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from voxssl.config.recipe import load_recipe
from voxssl.dinov2.loop import pretrain_dinov2
from voxssl.errors import CheckpointError, ConfigError
from voxssl.models.vit import load_vit
from voxssl.models.weights import read_plan


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    } | {"__images__": accumulator.Tags()["images"]}


def test_cli_trains_on_cache_slices_and_an_image_folder(dinov2_recipe, tmp_path, images2d):
    from voxssl.cli import app

    # PNG, JPEG, 16-bit PNG and DICOM images
    folder = images2d.write_class_folder(tmp_path / "images", per_class=2)
    path = dinov2_recipe("cli", steps=3, data={"folders": [str(folder)]})
    result = CliRunner().invoke(app, ["dinov2", "pretrain", str(path), "-q"])
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / "runs" / "cli"
    encoder = run_dir / "encoder.safetensors"
    assert f"encoder:     {encoder}" in result.output
    plan = read_plan(encoder)
    assert plan.kind == "backbone" and plan.architecture["family"] == "dinov2"
    assert plan.architecture["hidden_size"] == 32 and plan.architecture["patch_size"] == 8
    assert plan.preprocessing["folders"] == [str(folder)] and plan.extra["step"] == 3
    model, _ = load_vit(encoder)
    out = model(pixel_values=torch.zeros(1, 3, 32, 32)).last_hidden_state
    assert out.shape == (1, 1 + 16, 32) and torch.isfinite(out).all()
    assert (run_dir / "recipe.resolved.yaml").is_file()
    init = read_plan(run_dir / "encoder_init.safetensors")  # the random start, the baseline
    assert init.extra == {"step": 0, "init": "random"} and init.architecture == plan.architecture
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "step_0000002",
        "step_0000003",
    ]
    scalars = _tensorboard_scalars(run_dir / "tensorboard")
    for tag in ("loss/total", "loss/dino_local", "loss/dino_global", "loss/koleo", "loss/ibot"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3], tag
    # teacher temperature: linear warm-up 0.04 -> 0.07 over 2 steps, then constant
    temperatures = [value for _, value in scalars["train/teacher_temperature"]]
    assert temperatures == pytest.approx([0.04, 0.07, 0.07])
    # the prototypes' learning rate is 0 for the first step (freeze_last_layer_steps: 1)
    assert scalars["train/last_layer_lr"][0][1] == 0.0 < scalars["train/last_layer_lr"][1][1]
    assert "crops/global_local_mask" in scalars["__images__"]


def test_stop_and_resume_equals_one_run_bit_for_bit(dinov2_recipe):
    """Centering targets: the EMA centers must be restored too for the runs to agree exactly."""
    changes = {"loss": {"targets": "centering"}}
    full = pretrain_dinov2(load_recipe(dinov2_recipe("full", **changes)), progress=False)
    path = dinov2_recipe("interrupted", **changes)
    first = pretrain_dinov2(load_recipe(path), progress=False, stop_after=2)
    assert first.encoder_path is None and first.last_step == 2
    second = pretrain_dinov2(load_recipe(path), resume=True, progress=False)
    assert second.start_step == 2 and second.last_step == 4
    assert [second.losses[s] for s in (3, 4)] == [full.losses[s] for s in (3, 4)]
    full_state, resumed_state = full.model.state_dict(), second.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    assert any(k.startswith("dino_center") for k in full_state)
    for key, value in full_state.items():
        assert torch.equal(value, resumed_state[key]), key
    encoders = [load_file(str(r.encoder_path)) for r in (full, second)]
    assert all(torch.equal(encoders[0][k], encoders[1][k]) for k in encoders[0])


def test_resume_refuses_a_changed_setting(dinov2_recipe):
    path = dinov2_recipe("changed")
    pretrain_dinov2(load_recipe(path), progress=False, stop_after=2)
    changed = load_recipe(path, ["dinov2.loss.koleo_weight=0.5"])
    with pytest.raises(CheckpointError, match=r"dinov2\.loss"):
        pretrain_dinov2(changed, resume=True, progress=False)
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        pretrain_dinov2(load_recipe(path), progress=False)


def test_continues_from_a_hugging_face_folder_and_from_its_own_encoder(
    dinov2_recipe, tiny_dinov2_folder
):
    from transformers import Dinov2Model

    start = Dinov2Model.from_pretrained(str(tiny_dinov2_folder))  # the layout of a hub download
    vit = {"pretrained": True, "weights": str(tiny_dinov2_folder), "drop_path_rate": 0.0}
    first = pretrain_dinov2(load_recipe(dinov2_recipe("from-hf", 2, vit=vit)), progress=False)
    trained = load_file(str(first.encoder_path))
    assert not (first.run_dir / "encoder_init.safetensors").exists()  # the start is on disk already
    initial = start.state_dict()
    assert trained.keys() == initial.keys()
    assert not all(torch.equal(trained[k], initial[k]) for k in trained)  # it trained ...
    # ... from the given weights: the student's weights were loaded before the first step
    assert torch.allclose(
        trained["embeddings.cls_token"], initial["embeddings.cls_token"], atol=0.1
    )

    vit = {"pretrained": True, "weights": str(first.encoder_path), "drop_path_rate": 0.0}
    again = pretrain_dinov2(load_recipe(dinov2_recipe("again", 2, vit=vit)), progress=False)
    assert read_plan(again.encoder_path).architecture == read_plan(first.encoder_path).architecture


def test_the_encoder_runs_the_few_shot_recipe(dinov2_recipe, phantom_slice_cache, tmp_path):
    from voxssl.cli import app

    encoder = pretrain_dinov2(load_recipe(dinov2_recipe("enc", 2)), progress=False).encoder_path
    data = dict(phantom_slice_cache["data"], name="fewshot-vit", output_dir=str(tmp_path / "runs"))
    data["fewshot"] = {
        "encoder": {
            "type": "dinov2",
            "size": "large",  # the weights' plan decides the architecture
            "weights": str(encoder),
            "lora": {"rank": 2, "alpha": 2.0},
        },
        "image_size": 64,
        "eval_image_size": 64,
        "superpixels": {"min_size": 40, "num_workers": 1},
        "alp": {"feature_grid": 16, "eval_feature_grid": 16},
        "optim": {"steps": 4, "lr": 0.01, "log_every": 2, "checkpoint_every": 0},
        "eval": {"setting": 2, "folds": 3},
        "device": "cpu",
    }
    recipe = tmp_path / "fewshot.yaml"
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    runner = CliRunner()
    args = ["--group", "1", "--fold", "0"]
    result = runner.invoke(app, ["few-shot", "train", str(recipe), *args])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["few-shot", "eval", str(recipe), *args, "--out", str(tmp_path / "eval")]
    )
    assert result.exit_code == 0, result.output
    assert "Dice % (mean over scans)" in result.output
    assert (tmp_path / "eval" / "results.json").is_file()


def test_export_release_of_the_run_folder(dinov2_recipe, tmp_path):
    from voxssl.cli import app

    run = pretrain_dinov2(load_recipe(dinov2_recipe("release", 2)), progress=False)
    out = tmp_path / "release"
    result = CliRunner().invoke(
        app, ["weights", "export", str(run.run_dir), "--out", str(out), "--license", "CC-BY-4.0"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.safetensors", "plan.json"]
    released = load_file(str(out / "model.safetensors"))  # the checkpoint reduced to the teacher
    encoder = load_file(str(run.encoder_path))
    assert released.keys() == encoder.keys()
    assert all(torch.equal(released[k], encoder[k]) for k in encoder)
    assert read_plan(out / "model.safetensors").kind == "backbone"
    assert "fewshot.encoder.weights" in (out / "README.md").read_text(encoding="utf-8")
    load_vit(out / "model.safetensors")
    # a 3D verb refuses it with one clear line
    from voxssl.models.weights import load_backbone

    with pytest.raises(CheckpointError, match="DINOv2 ViT weights"):
        load_backbone(out / "model.safetensors")


def test_user_errors_are_one_line(dinov2_recipe, tmp_path, capsys):
    from voxssl.cli import main
    from voxssl.errors import DataError

    path = dinov2_recipe("bad", vit={"pretrained": True, "hidden_size": 32})
    with pytest.raises(SystemExit) as exit_:
        main(["dinov2", "pretrain", str(path), "-q"])
    assert exit_.value.code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "vit.hidden_size" in error and "\n" not in error
    with pytest.raises(ConfigError, match=r"unknown key .dinov2\.optim\.learning_rate."):
        load_recipe(dinov2_recipe("typo"), ["dinov2.optim.learning_rate=0.1"])
    recipe = load_recipe(dinov2_recipe("nocache"), [f"data.cache_dir={tmp_path / 'nowhere'}"])
    with pytest.raises(DataError, match="no preprocessed cache"):
        pretrain_dinov2(recipe, progress=False)
