"""DINOv2 built offline from a tiny random checkpoint through the real loading paths; LoRA."""

from __future__ import annotations

import shutil

import pytest
import torch

from voxssl.config.fewshot import EncoderConfig, LoRAConfig
from voxssl.errors import CheckpointError
from voxssl.fewshot.dinov2 import (
    ARCHITECTURES,
    DinoV2Features,
    apply_lora,
    cached_weights_dir,
    dinov2_config,
    load_dinov2,
    lora_parameter_count,
)
from voxssl.fewshot.encoders import build_encoder

WIDTH, DEPTH = 32, 2


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from transformers import Dinov2Model

    folder = tmp_path_factory.mktemp("dinov2_tiny")
    torch.manual_seed(0)
    model = Dinov2Model(
        dinov2_config("small", hidden_size=WIDTH, num_hidden_layers=DEPTH, num_attention_heads=2)
    )
    model.save_pretrained(str(folder))  # config.json + model.safetensors, as on the hub
    return folder, model


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_folder_file_and_cache_load_the_same_weights(tiny_checkpoint, monkeypatch):
    folder, reference = tiny_checkpoint
    assert _same_weights(load_dinov2("small", folder), reference)
    assert _same_weights(load_dinov2("small", folder / "model.safetensors"), reference)
    target = cached_weights_dir("small")  # $VOXSSL_HOME (a tmp dir in tests)
    shutil.copytree(folder, target)
    assert _same_weights(load_dinov2("small"), reference)


def test_offline_without_weights_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="dinov2/base"):
        load_dinov2("base")


def test_incomplete_file_is_rejected(tiny_checkpoint, tmp_path):
    from safetensors.torch import load_file, save_file

    folder, _ = tiny_checkpoint
    shutil.copy(folder / "config.json", tmp_path / "config.json")
    state = load_file(str(folder / "model.safetensors"))
    dropped = next(k for k in state if k.endswith("fc1.weight"))
    del state[dropped]  # a weight that would silently stay random
    save_file(state, str(tmp_path / "weights.safetensors"))
    with pytest.raises(CheckpointError, match="does not match"):
        load_dinov2("small", tmp_path / "weights.safetensors")
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    with pytest.raises(CheckpointError, match="neither"):
        load_dinov2("small", tmp_path / "notes.txt")


def test_released_architectures():
    from transformers import Dinov2Model

    assert (
        ARCHITECTURES["large"]["hidden_size"] == 1024
        and ARCHITECTURES["large"]["num_hidden_layers"] == 24
    )
    with torch.device("meta"):
        counts = {
            size: sum(p.numel() for p in Dinov2Model(dinov2_config(size)).parameters())
            for size in ("small", "large")
        }
    assert 21e6 < counts["small"] < 23e6 and 300e6 < counts["large"] < 310e6


def test_lora_trainable_parameter_count_is_exact(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    rank = 4
    model = apply_lora(load_dinov2("small", folder), rank=rank, alpha=4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # per block: q, k, v, o: r (D + D) each; fc1: r (D + 4D); fc2: r (4D + D)  ->  18 r D
    assert trainable == DEPTH * 18 * rank * WIDTH == lora_parameter_count(model, rank)
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())


def test_encoder_features_and_gradients(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    config = EncoderConfig(
        type="dinov2",
        size="small",
        weights=folder,
        input_mode="adapter",
        lora=LoRAConfig(rank=2, alpha=2),
    )
    encoder = build_encoder(config)
    slices = torch.rand(2, 3, 64, 64)  # resized to 56 = 4 patches of 14
    features = encoder(slices, grid=8)
    assert features.shape == (2, WIDTH, 8, 8)
    assert DinoV2Features(encoder.backbone.model)(torch.rand(1, 3, 28, 42)).shape == (
        1,
        WIDTH,
        2,
        3,
    )
    features.square().mean().backward()
    grads = {n for n, p in encoder.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n or n.startswith("input_mode.adapter") for n in grads)
    assert any(n.startswith("input_mode.adapter") for n in grads)
