import pytest

from voxssl.config.model import ModelConfig, model_config_from_dict, model_config_to_dict
from voxssl.config.recipe import recipe_from_dict
from voxssl.errors import ConfigError
from voxssl.models.build import embedding_dim, feature_channels, level_channels


def test_vox2vec_preset_defaults():
    cfg = ModelConfig(preset="vox2vec")
    assert (cfg.base_channels, cfg.num_levels, cfg.blocks_per_stage) == (16, 6, 2)
    assert cfg.projection == "none" and cfg.reconstruction == "none"
    assert level_channels(cfg) == [16, 32, 64, 128, 256, 512]
    assert embedding_dim(cfg) == 1008
    assert cfg.projector_hidden == 1008 and cfg.projector_out == 128


def test_hierarchical_preset_defaults():
    cfg = ModelConfig(preset="hierarchical")
    assert (cfg.base_channels, cfg.num_levels) == (32, 5)
    assert cfg.projection == "learned"
    assert feature_channels(cfg) == [32, 64, 128, 256, 512]
    assert level_channels(cfg) == [32] * 5
    assert embedding_dim(cfg) == 160
    assert cfg.projector_hidden == 160
    assert cfg.reconstruction == "conv1x1" and cfg.reconstruction_channels == 1


def test_explicit_keys_override_the_preset_and_round_trip():
    cfg = model_config_from_dict(
        {
            "preset": "hierarchical",
            "num_levels": 4,
            "projection": "frozen_random",
            "norm": ["group", {"num_groups": 4}],
            "in_channels": 2,
        }
    )
    assert cfg.num_levels == 4 and cfg.projection == "frozen_random"
    assert cfg.norm == ("group", {"num_groups": 4})
    assert cfg.reconstruction_channels == 2 and embedding_dim(cfg) == 128
    data = model_config_to_dict(cfg)
    assert model_config_from_dict(data) == cfg


def test_model_section_in_a_recipe_validates_keys_and_values():
    recipe = recipe_from_dict({"model": {"preset": "vox2vec", "base_channels": 8}}, source="r.yaml")
    assert recipe.model.base_channels == 8 and embedding_dim(recipe.model) == 8 * 63
    with pytest.raises(ConfigError, match=r"model\.num_level"):
        recipe_from_dict({"model": {"num_level": 3}}, source="r.yaml")
    with pytest.raises(ConfigError, match=r"r\.yaml.*base_channels"):
        recipe_from_dict({"model": {"base_channels": 0}}, source="r.yaml")
    with pytest.raises(ConfigError, match="projection"):
        recipe_from_dict({"model": {"projection": "random"}}, source="r.yaml")
