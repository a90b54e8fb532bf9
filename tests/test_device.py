"""voxssl.device: the one rule for device and precision that every loop and inference follows."""

from __future__ import annotations

import pytest
import torch

from voxssl.config.recipe import recipe_from_dict
from voxssl.device import autocast, autocast_dtype, resolve_device, set_cpu_threads
from voxssl.errors import ConfigError

CPU, GPU = torch.device("cpu"), torch.device("cuda", 0)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_and_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU
    assert resolve_device(" CPU ") == CPU


@pytest.mark.parametrize("requested", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_config_error_naming_the_key(no_gpu, requested):
    with pytest.raises(ConfigError, match=rf"^finetune\.device is '{requested}' but no CUDA"):
        resolve_device(requested, "finetune.device")


@pytest.mark.parametrize("requested", ["gpu", "mps", "cuda:x", ""])
def test_unknown_devices_are_config_errors(requested):
    with pytest.raises(ConfigError, match=r"--device must be one of auto, cpu, cuda or cuda:N"):
        resolve_device(requested, "--device")


def test_auto_and_cuda_pick_the_local_rank_gpu(two_gpus):
    assert resolve_device("auto") == GPU
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert resolve_device("cuda:1", local_rank=0) == torch.device("cuda", 1)  # explicit wins
    with pytest.raises(ConfigError, match=r"cuda:2 does not exist \(this machine has 2 GPU"):
        resolve_device("cuda:2", "pretrain.device")


@pytest.mark.parametrize(
    ("amp", "cpu", "gpu"),
    [
        ("auto", None, torch.bfloat16),
        (True, None, torch.bfloat16),
        ("fp32", None, None),
        (False, None, None),
    ],
)
def test_bf16_on_gpu_only(amp, cpu, gpu):
    assert autocast_dtype(amp, CPU) is cpu
    assert autocast_dtype(amp, GPU) is gpu


def test_bf16_asked_on_the_cpu_is_an_error_and_unknown_precisions_too():
    assert autocast_dtype("bf16", GPU) is torch.bfloat16
    with pytest.raises(ConfigError, match=r"^pretrain\.amp is 'bf16' but this runs on the CPU"):
        autocast_dtype("bf16", CPU, "pretrain.amp")
    with pytest.raises(ConfigError, match=r"^amp must be auto, bf16 or fp32, got 'fp16'"):
        autocast_dtype("fp16", GPU)  # type: ignore[arg-type]


def test_autocast_on_the_cpu_keeps_fp32():
    conv = torch.nn.Conv3d(1, 2, 3)
    with autocast(CPU, "auto"):
        assert not torch.is_autocast_enabled("cpu")
        out = conv(torch.randn(1, 1, 4, 4, 4))
    assert out.dtype == torch.float32


def test_cpu_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    set_cpu_threads(CPU, 0)
    set_cpu_threads(GPU, 3)
    set_cpu_threads(CPU, 3)
    assert calls == [3]


def test_pretraining_and_few_shot_loops_name_their_own_key(no_gpu, tmp_path):
    """Each loop fails the same way, before any work: one line naming its own recipe key."""
    import numpy as np

    from voxssl.config.fewshot import FewShotConfig
    from voxssl.fewshot.train import train_alpnet
    from voxssl.train.loop import pretrain

    recipe = recipe_from_dict({"model": {}, "pretrain": {"device": "cuda"}})
    with pytest.raises(ConfigError, match=r"^pretrain\.device is 'cuda' but no CUDA"):
        pretrain(recipe, progress=False)
    config = FewShotConfig(device="cuda")
    with pytest.raises(ConfigError, match=r"^fewshot\.device is 'cuda' but no CUDA"):
        train_alpnet(None, None, config, tmp_path / "w.safetensors", np.random.default_rng(0))  # type: ignore[arg-type]
