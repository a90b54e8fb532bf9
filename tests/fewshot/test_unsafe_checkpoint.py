"""Issue 15.6 (second part): a DINOv2 folder whose pytorch_model.bin needs pickle code to load is
refused with one line naming the file (no traceback), and the pickle's code never runs."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from voxssl.errors import CheckpointError
from voxssl.fewshot.dinov2 import dinov2_config, load_dinov2

RAN = []


class _Payload:
    """Unpickling this calls ``RAN.append`` (arbitrary code, as in a malicious checkpoint)."""

    def __reduce__(self):
        return (RAN.append, ("pickle code ran",))


@pytest.fixture()
def unsafe_folder(tmp_path):
    from transformers import Dinov2Model

    folder = tmp_path / "dinov2_unsafe"
    model = Dinov2Model(
        dinov2_config("small", hidden_size=32, num_hidden_layers=2, num_attention_heads=2)
    )
    model.save_pretrained(str(folder))
    (folder / "model.safetensors").unlink()
    state = model.state_dict()
    state["payload"] = _Payload()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_unsafe_pytorch_model_bin_is_refused_in_one_line(unsafe_folder):
    with pytest.raises(CheckpointError) as info:
        load_dinov2("small", unsafe_folder)
    message = str(info.value)
    assert "\n" not in message and "pytorch_model.bin" in message and str(unsafe_folder) in message
    assert "safetensors" in message
    assert RAN == []


def test_cli_few_shot_train_prints_one_line_and_exits_1(
    unsafe_folder, phantom_cache, tmp_path, capsys
):
    from voxssl.cli import main

    data = copy.deepcopy(phantom_cache["data"])
    data["output_dir"] = str(tmp_path / "runs")
    data["fewshot"]["encoder"] = {"type": "dinov2", "size": "small", "weights": str(unsafe_folder)}
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["few-shot", "train", str(recipe), "--group", "1", "--fold", "0"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(lines) == 1 and "pytorch_model.bin" in lines[0], err
    assert RAN == []
