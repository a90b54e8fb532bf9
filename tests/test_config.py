from pathlib import Path

import pytest

from voxssl.config import load_recipe, save_resolved
from voxssl.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_recipe_and_overrides(tmp_path):
    path = write(
        tmp_path, "name: x\ndata:\n  sources:\n    - {adapter: folder, root: /data, modality: ct}\n"
    )
    recipe = load_recipe(
        path, ["seed=7", "data.sources.0.root=/other", "preprocess.ct.window_hu=[-100, 200]"]
    )
    assert recipe.seed == 7
    assert recipe.data.sources[0].root == Path("/other")
    assert recipe.data.sources[0].name == "folder"
    assert recipe.preprocess.ct.window_hu == (-100.0, 200.0)
    assert recipe.preprocess.ct.spacing == (1.0, 1.0, 2.0)


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "data:\n  cache_dri: x\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: unknown key 'data\.cache_dri'"):
        load_recipe(path)


def test_wrong_type_names_key(tmp_path):
    path = write(tmp_path, "seed: abc\n")
    with pytest.raises(ConfigError, match=r"'seed' must be an integer"):
        load_recipe(path)
    path = write(tmp_path, "preprocess:\n  ct:\n    spacing: [1, 1]\n")
    with pytest.raises(ConfigError, match=r"'preprocess\.ct\.spacing' must have 3 items"):
        load_recipe(path)


def test_bad_literal_and_override(tmp_path):
    path = write(tmp_path, "data:\n  sources:\n    - {adapter: folder, root: /d, modality: pet}\n")
    with pytest.raises(ConfigError, match="modality"):
        load_recipe(path)
    with pytest.raises(ConfigError, match="key.path=value"):
        load_recipe(write(tmp_path, "name: a\n"), ["seed"])
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        load_recipe(write(tmp_path, "name: a\n"), ["nope=1"])


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_recipe(tmp_path / "absent.yaml")


def test_save_resolved_roundtrip(tmp_path):
    recipe = load_recipe(
        write(tmp_path, "name: abc\nseed: 3\n"), ["preprocess.mr.percentiles=[1, 99]"]
    )
    out = save_resolved(recipe, tmp_path / "run")
    again = load_recipe(out)
    assert again.seed == 3 and again.preprocess.mr.percentiles == (1.0, 99.0)
    assert not list((tmp_path / "run").glob(".tmp-*"))
