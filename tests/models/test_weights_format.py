import json
import pickle

import pytest
import torch

from voxssl.config.data import PreprocessConfig
from voxssl.config.model import ModelConfig
from voxssl.errors import CheckpointError
from voxssl.models.build import build_backbone, build_pretrain_model
from voxssl.models.plan import Plan, check_plan, preprocessing_plan
from voxssl.models.weights import (
    load_backbone,
    load_weights,
    read_plan,
    save_weights,
    strip_prefixes,
)

TINY = {"preset": "hierarchical", "base_channels": 2, "num_levels": 3}


def tiny_plan(cfg: ModelConfig, kind: str = "backbone") -> Plan:
    return Plan.for_model(
        cfg, preprocessing_plan("ct", PreprocessConfig()), recipe={"name": "test"}, kind=kind
    )


def test_round_trip_keeps_tensors_and_plan(tmp_path):
    cfg = ModelConfig(**TINY, projection="frozen_random")
    backbone = build_backbone(cfg)
    path = save_weights(tmp_path / "w.safetensors", backbone.state_dict(), tiny_plan(cfg))
    state, plan = load_weights(path)
    assert plan.model_config() == cfg
    assert plan.preprocessing["modality"] == "ct" and plan.preprocessing["spacing"] == [
        1.0,
        1.0,
        2.0,
    ]
    assert plan.preprocessing["intensity"]["window_hu"] == [-1350.0, 1000.0]
    assert set(state) == set(backbone.state_dict())
    assert all(torch.equal(state[k], v) for k, v in backbone.state_dict().items())
    assert read_plan(path) == plan
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left nothing behind


def test_load_backbone_from_a_pretrain_state_dict_with_ddp_prefix(tmp_path):
    cfg = ModelConfig(**TINY)
    model = build_pretrain_model(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}  # as saved from DDP
    path = save_weights(tmp_path / "p.safetensors", wrapped, tiny_plan(cfg, kind="pretrain"))
    backbone, plan = load_backbone(
        path, expect={"preprocessing": {"modality": "ct"}, "architecture.in_channels": 1}
    )
    assert plan.kind == "pretrain" and not backbone.training
    x = torch.randn(1, 1, 8, 8, 4)
    model.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.backbone(x), backbone(x), strict=True))


def test_plan_mismatch_names_the_field(tmp_path):
    cfg = ModelConfig(**TINY)
    path = save_weights(
        tmp_path / "w.safetensors", build_backbone(cfg).state_dict(), tiny_plan(cfg)
    )
    with pytest.raises(
        CheckpointError, match=r"w.safetensors.*'preprocessing.modality' is 'ct' but 'mr'"
    ):
        load_backbone(path, expect={"preprocessing.modality": "mr"})
    with pytest.raises(CheckpointError, match=r"'architecture.in_channels' is 1 but 4"):
        load_backbone(path, expect={"architecture": {"in_channels": 4}})
    with pytest.raises(CheckpointError, match=r"no field 'preprocessing\.orientation'"):
        load_backbone(path, expect={"preprocessing.orientation": "RAS"})
    check_plan(read_plan(path), {"preprocessing.spacing": (1.0, 1.0, 2.0000000001)})  # tolerance


def test_tensor_mismatch_names_the_first_key_or_shape(tmp_path):
    cfg = ModelConfig(**TINY)
    state = build_backbone(cfg).state_dict()
    missing = dict(state)
    missing.pop("bottom_block.layers.0.layers.2.weight")
    with pytest.raises(
        CheckpointError, match=r"'bottom_block\.layers\.0\.layers\.2\.weight' is missing"
    ):
        load_backbone(save_weights(tmp_path / "a.safetensors", missing, tiny_plan(cfg)))
    extra = dict(state, **{"head.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"unexpected key 'head\.weight'"):
        load_backbone(save_weights(tmp_path / "b.safetensors", extra, tiny_plan(cfg)))
    wider = ModelConfig(**dict(TINY, base_channels=4))
    with pytest.raises(
        CheckpointError,
        match=r"'first_conv.weight' has shape \(4, 1, 3, 3, 3\) in the weights but \(2",
    ):
        load_backbone(
            save_weights(
                tmp_path / "c.safetensors", build_backbone(wider).state_dict(), tiny_plan(cfg)
            )
        )


def test_refuses_pickles_foreign_files_and_bad_plans(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(tmp_path / "missing.safetensors")
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, pt)
    with pytest.raises(CheckpointError, match="pickle"):
        load_weights(pt)
    legacy = tmp_path / "legacy.pkl"
    legacy.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_weights(legacy)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(1)}, str(plain))
    with pytest.raises(CheckpointError, match="without a voxssl plan"):
        load_weights(plain)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match=r"garbage\.safetensors"):
        load_weights(garbage)
    with pytest.raises(CheckpointError, match="unknown plan field 'colour'"):
        Plan.from_json(json.dumps({"architecture": {}, "colour": 1}), source="x")
    with pytest.raises(CheckpointError, match="newer"):
        Plan.from_json(json.dumps({"architecture": {}, "format_version": 99}), source="x")
    bad_arch = Plan(architecture={"preset": "hierarchical", "num_levels": "five"})
    with pytest.raises(CheckpointError, match="num_levels"):
        bad_arch.model_config()


def test_strip_prefixes():
    t = torch.zeros(1)
    assert strip_prefixes({"module._orig_mod.first_conv.weight": t}) == {"first_conv.weight": t}
    assert strip_prefixes({"backbone.a": t, "projector.b": t}) == {"a": t}
    assert strip_prefixes({"a": t, "b": t}) == {"a": t, "b": t}
