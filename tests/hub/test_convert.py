"""Converters from the vox2vec and hierarchical-dense-ssl layouts, checked against a functional
forward pass over the foreign tensors (tests/hub/foreign.py), never against voxssl's own code."""

from __future__ import annotations

import pytest
import torch

from voxssl.hub.channels import adapt_input_channels
from voxssl.hub.convert import import_foreign, parse_key, voxssl_key
from voxssl.hub.errors import ConversionError
from voxssl.models.weights import load_backbone, read_plan

from .foreign import foreign_fpn_state, reference_forward

LEVELS, BLOCKS = 3, 2


@pytest.fixture(scope="module")
def foreign():
    return foreign_fpn_state(base=4, levels=LEVELS, blocks=BLOCKS, seed=1)


@pytest.fixture(scope="module")
def image():
    return torch.rand(
        1, 1, 12, 10, 6, generator=torch.Generator().manual_seed(2)
    )  # odd sizes: ceil pooling


def _assert_same_pyramid(backbone, foreign, x):
    with torch.no_grad():
        got = backbone(x)
        want = reference_forward(foreign, x, LEVELS, BLOCKS)
    assert [t.shape for t in got] == [t.shape for t in want]
    for level, (g, w) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5, msg=f"level {level}")


def test_vox2vec_import_places_every_tensor_and_matches_forward(tmp_path, foreign, image):
    source = tmp_path / "vox2vec_contrastive.pt"
    torch.save(foreign, source)
    result = import_foreign(source, tmp_path / "out.safetensors", "vox2vec")
    backbone, plan = load_backbone(result.path)
    assert plan.architecture["base_channels"] == 4 and plan.architecture["num_levels"] == LEVELS
    assert plan.architecture["projection"] == "none"
    assert plan.preprocessing["modality"] == "ct" and plan.extra["converted_from"] == "vox2vec"
    loaded = backbone.state_dict()
    assert set(loaded) == set(foreign)
    for key, tensor in foreign.items():  # independent placement: voxssl names equal vox2vec's
        assert torch.equal(loaded[key], tensor), key
    _assert_same_pyramid(backbone, foreign, image)


def test_hierarchical_import_with_prefixes_and_heads(tmp_path, foreign, image):
    wrapped = {f"module.backbone.{k}": v for k, v in foreign.items()}
    wrapped["module.proj_head.0.weight"] = torch.zeros(3, 3)  # pretraining head: ignored
    source = tmp_path / "ct.ckpt"
    torch.save({"state_dict": wrapped, "epoch": 3}, source)
    result = import_foreign(
        source,
        tmp_path / "h.safetensors",
        "hierarchical",
        modality="mr",
        preprocessing={"spacing": [1.5, 1.5, 1.5], "percentiles": [1.0, 99.99]},
    )
    backbone, plan = load_backbone(result.path)
    assert (
        plan.architecture["preset"] == "hierarchical" and plan.architecture["projection"] == "none"
    )
    assert plan.preprocessing["modality"] == "mr" and plan.preprocessing["spacing"] == [
        1.5,
        1.5,
        1.5,
    ]
    assert "never saved" in plan.extra["note"]
    _assert_same_pyramid(backbone, foreign, image)


def test_hierarchical_requires_state_dict_entry(tmp_path, foreign):
    source = tmp_path / "plain.pt"
    torch.save(foreign, source)
    with pytest.raises(ConversionError, match="'state_dict' entry"):
        import_foreign(source, tmp_path / "x.safetensors", "hierarchical")


def test_shape_mismatch_names_the_key(tmp_path, foreign):
    bad = dict(foreign)
    bad["down_blocks.1.1.weight"] = torch.zeros(16, 7, 1, 1, 1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(
        ConversionError, match=r"key 'down_blocks\.1\.1\.weight' has shape \(16, 7, 1, 1, 1\)"
    ):
        import_foreign(tmp_path / "bad.pt", tmp_path / "x.safetensors", "vox2vec")
    assert not (tmp_path / "x.safetensors").exists()


def test_unknown_and_missing_keys_are_named(tmp_path, foreign):
    extra = dict(foreign, **{"left_blocks.0.layers.0.layers.7.weight": torch.zeros(4)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(ConversionError, match=r"left_blocks\.0\.layers\.0\.layers\.7\.weight"):
        import_foreign(tmp_path / "extra.pt", tmp_path / "x.safetensors", "vox2vec")
    missing = {k: v for k, v in foreign.items() if k != "skip_blocks.1.bias"}
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ConversionError, match=r"no tensor for voxssl's 'skip_blocks\.1\.bias'"):
        import_foreign(tmp_path / "missing.pt", tmp_path / "x.safetensors", "vox2vec")


def test_architecture_disagreeing_with_tensors_is_refused(tmp_path, foreign):
    torch.save(foreign, tmp_path / "w.pt")
    with pytest.raises(
        ConversionError,
        match=r"architecture\.base_channels is 16 but the checkpoint's tensors say 4",
    ):
        import_foreign(
            tmp_path / "w.pt",
            tmp_path / "x.safetensors",
            "vox2vec",
            architecture={"base_channels": 16},
        )


class _NotATensor:
    pass


def test_pickled_objects_are_never_unpickled(tmp_path, foreign):
    torch.save({"state_dict": foreign, "callback": _NotATensor()}, tmp_path / "pickle.ckpt")
    with pytest.raises(ConversionError, match="cannot be read as tensors only"):
        import_foreign(tmp_path / "pickle.ckpt", tmp_path / "x.safetensors", "hierarchical")


def test_key_grammar_round_trip():
    assert (
        parse_key("right_blocks.0.layers.1.layers.3.running_var", 3).level == 1
    )  # deepest decoder = level L-2
    assert parse_key("up_blocks.1.0.weight", 3).level == 0
    for key in [
        "right_blocks.1.layers.0.layers.5.bias",
        "down_blocks.0.1.weight",
        "bottom_block.layers.1.layers.0.weight",
    ]:
        assert voxssl_key(parse_key(key, 3), 3) == key
    with pytest.raises(ConversionError, match="not part of a vox2vec-layout"):
        parse_key("proj.weight", 3)


def test_channel_adaptation_repeat_keeps_features_of_repeated_image(tmp_path, foreign, image):
    torch.save(foreign, tmp_path / "w.pt")
    with pytest.raises(
        ConversionError, match=r"take 1 input channel.*has 4.*--adapt-channels repeat"
    ):
        import_foreign(tmp_path / "w.pt", tmp_path / "r.safetensors", "vox2vec", in_channels=4)
    result = import_foreign(
        tmp_path / "w.pt",
        tmp_path / "r.safetensors",
        "vox2vec",
        in_channels=4,
        adapt_channels="repeat",
    )
    backbone, plan = load_backbone(result.path)
    assert plan.architecture["in_channels"] == 4 and plan.preprocessing["in_channels"] == 4
    assert "1->4" in plan.extra["adapted_channels"]
    with torch.no_grad():
        got = backbone(image.repeat(1, 4, 1, 1, 1))
    want = reference_forward(foreign, image, LEVELS, BLOCKS)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    first = backbone.state_dict()["first_conv.weight"]
    torch.testing.assert_close(first.sum(dim=1, keepdim=True), foreign["first_conv.weight"])


def test_channel_adaptation_needs_a_multiple():
    state = {"first_conv.weight": torch.ones(4, 2, 3, 3, 3)}
    assert adapt_input_channels(state, 4, "repeat")["first_conv.weight"].shape == (4, 4, 3, 3, 3)
    with pytest.raises(ConversionError, match="3 is not a multiple of 2"):
        adapt_input_channels(state, 3, "repeat")
    with pytest.raises(ConversionError, match="adapt_channels must be one of"):
        adapt_input_channels(state, 4, "tile")  # type: ignore[arg-type]


def test_plan_is_readable_without_loading_tensors(tmp_path, foreign):
    torch.save(foreign, tmp_path / "w.pt")
    result = import_foreign(
        tmp_path / "w.pt",
        tmp_path / "o.safetensors",
        "vox2vec",
        provenance={"registry_name": "vox2vec-contrastive", "url": "https://example.org/w.pt"},
    )
    plan = read_plan(result.path)
    assert plan.extra["registry_name"] == "vox2vec-contrastive"
    assert plan.extra["source_sha256"] == result.source_sha256


def test_safetensors_header_starting_with_0x80_is_not_taken_for_a_pickle(tmp_path, foreign):
    """safetensors pads its header to 8 bytes, so 1 file in 32 has a length whose first byte is
    0x80, the first byte of a pickle: such a file must still load."""
    torch.save(foreign, tmp_path / "w.pt")
    for pad in range(0, 400, 8):
        result = import_foreign(
            tmp_path / "w.pt", tmp_path / "o.safetensors", "vox2vec", provenance={"pad": "x" * pad}
        )
        if result.path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.skip("no padding gave a 0x80 header length")
    assert read_plan(result.path).extra["pad"] == "x" * pad
