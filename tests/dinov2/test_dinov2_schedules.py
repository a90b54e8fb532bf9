"""DINOv2's schedules against a naive rebuild of its CosineScheduler arrays; parameter groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxssl.config.dinov2 import Dinov2Config, OptimConfig, TeacherConfig
from voxssl.dinov2.param_groups import parameter_groups
from voxssl.dinov2.schedules import cosine_schedule, schedule_values


def _scheduler_array(base, final, total, warmup=0, start=0.0, freeze=0):
    """DINOv2's CosineScheduler, rebuilt as the array it stores."""
    iters = np.arange(total - warmup - freeze)
    cosine = final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / max(len(iters), 1)))
    return np.concatenate([np.zeros(freeze), np.linspace(start, base, warmup), cosine])


@pytest.mark.parametrize(
    "args",
    [
        (1e-3, 1e-6, 50, 10, 0.0, 0),
        (0.04, 0.4, 30, 0, 0.0, 0),
        (0.5, 0.1, 40, 7, 0.2, 5),
        (1, 0, 9, 1, 0.3, 0),
    ],
)
def test_cosine_schedule_equals_the_array(args):
    base, final, total, warmup, start, freeze = args
    array = _scheduler_array(base, final, total, warmup, start, freeze)
    values = [
        cosine_schedule(s, base, final, total, warmup, start, freeze) for s in range(total + 3)
    ]
    np.testing.assert_allclose(values[:total], array, rtol=1e-12, atol=1e-15)
    assert values[total:] == [final] * 3


def test_schedule_values_of_a_recipe():
    cfg = Dinov2Config(
        optim=OptimConfig(
            steps=100, batch_size=256, base_lr=2e-4, warmup_steps=10, freeze_last_layer_steps=5
        ),
        teacher=TeacherConfig(momentum=0.994, temperature_warmup_steps=30),
    )
    lr = 2e-4 * (256 * 2 / 1024) ** 0.5  # sqrt scaling with 2 ranks
    first, warm, last = (schedule_values(s, cfg, world_size=2) for s in (0, 9, 99))
    assert first.lr == 0.0 and warm.lr == pytest.approx(lr)
    assert first.last_layer_lr == 0.0 and schedule_values(5, cfg, 2).last_layer_lr > 0
    assert first.teacher_temperature == pytest.approx(0.04)
    assert schedule_values(29, cfg).teacher_temperature == pytest.approx(0.07)
    assert schedule_values(60, cfg).teacher_temperature == pytest.approx(0.07)
    assert first.momentum == pytest.approx(0.994) and last.momentum > 0.9999
    assert first.weight_decay == pytest.approx(0.04) and last.weight_decay == pytest.approx(
        0.2, rel=1e-3
    )


def test_parameter_groups_follow_dinov2_rules():
    from transformers import Dinov2Model

    from voxssl.fewshot.dinov2 import dinov2_config
    from voxssl.models.dino_head import DINOHead

    backbone = Dinov2Model(
        dinov2_config("small", hidden_size=16, num_hidden_layers=3, num_attention_heads=2)
    )
    head = DINOHead(16, 8, 8, 4)
    groups = parameter_groups(
        backbone, {"dino_head": head}, layerwise_decay=0.5, patch_embed_lr_mult=0.2
    )
    by_name = {name: g for g in groups for name in g["names"]}
    total = sum(p.numel() for g in groups for p in g["params"])
    assert total == sum(p.numel() for p in backbone.parameters()) + sum(
        p.numel() for p in head.parameters()
    )
    lr = {name: g["lr_multiplier"] for name, g in by_name.items()}
    wd = {name: g["wd_multiplier"] for name, g in by_name.items()}
    assert lr["backbone.embeddings.cls_token"] == 0.5**4  # layer 0 of depth 3: 0.5^(3 + 1 - 0)
    assert lr["backbone.embeddings.patch_embeddings.projection.weight"] == pytest.approx(
        0.2 * 0.5**4
    )
    assert lr["backbone.encoder.layer.0.mlp.fc1.weight"] == 0.5**3
    assert lr["backbone.encoder.layer.2.mlp.fc1.weight"] == 0.5
    assert lr["backbone.layernorm.weight"] == 1.0 and lr["dino_head.mlp.0.weight"] == 1.0
    assert wd["backbone.encoder.layer.1.mlp.fc1.weight"] == 1.0
    assert wd["backbone.encoder.layer.1.mlp.fc1.bias"] == 0.0
    assert wd["backbone.encoder.layer.1.norm1.weight"] == 0.0
    assert wd["backbone.encoder.layer.1.layer_scale1.lambda1"] == 0.0
    assert wd["backbone.embeddings.cls_token"] == 1.0  # as in DINOv2: only biases, norms, gamma
    last = [name for name, g in by_name.items() if g["is_last_layer"]]
    assert sorted(last) == [
        "dino_head.last_layer.parametrizations.weight.original0",
        "dino_head.last_layer.parametrizations.weight.original1",
    ]
    optimizer = torch.optim.AdamW(groups)
    from voxssl.dinov2.param_groups import apply_step_values

    apply_step_values(optimizer, lr=1.0, last_layer_lr=0.0, weight_decay=0.1)
    for group in optimizer.param_groups:
        expected = 0.0 if group["is_last_layer"] else group["lr_multiplier"]
        assert group["lr"] == expected and group["weight_decay"] == 0.1 * group["wd_multiplier"]
