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
    with pytest.raises(ConfigError, match=r"key\.path=value"):
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


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_base_recipe_merges_mappings_and_replaces_everything_else(tmp_path):
    _write(
        tmp_path / "base.yaml",
        "name: base\nseed: 3\ndata:\n  cache_dir: c\n  num_workers: 2\n"
        "model:\n  base_channels: 8\n  num_levels: 4\n"
        "pretrain:\n  steps: 7\n  patch_size: [32, 32, 16]\n",
    )
    child = _write(
        tmp_path / "sub" / "child.yaml",
        "base: ../base.yaml\nname: child\ndata:\n  num_workers: 1\n"
        "model:\n  num_levels: 3\npretrain:\n  patch_size: [16, 16, 8]\nprobe:\n  classes: [liver]\n",
    )
    recipe = load_recipe(child, ["pretrain.steps=9"])
    assert recipe.name == "child" and recipe.seed == 3  # own key wins, base key kept
    assert recipe.data.cache_dir == Path("c") and recipe.data.num_workers == 1  # merged
    assert recipe.model.base_channels == 8 and recipe.model.num_levels == 3
    assert recipe.pretrain.patch_size == (16, 16, 8) and recipe.pretrain.steps == 9  # list replaced
    assert recipe.probe is not None and recipe.source_file == str(child)
    dropped = _write(tmp_path / "drop.yaml", "base: base.yaml\npretrain: null\n")
    assert load_recipe(dropped).pretrain is None  # null removes a section of the base


def test_base_chains_and_errors_name_the_file(tmp_path):
    _write(tmp_path / "a.yaml", "seed: 1\n")
    _write(tmp_path / "b.yaml", "base: a.yaml\nname: b\n")
    c = _write(tmp_path / "c.yaml", "base: b.yaml\n")
    assert (load_recipe(c).name, load_recipe(c).seed) == ("b", 1)
    missing = _write(tmp_path / "m.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"m\.yaml: base recipe .*nowhere\.yaml not found"):
        load_recipe(missing)
    _write(tmp_path / "x.yaml", "base: y.yaml\n")
    loop = _write(tmp_path / "y.yaml", "base: x.yaml\n")
    with pytest.raises(ConfigError, match=r"'base' makes a loop"):
        load_recipe(loop)
    bad = _write(tmp_path / "bad.yaml", "base: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: 'base' must be the path of another recipe"):
        load_recipe(bad)
    unknown = _write(tmp_path / "u.yaml", "base: a.yaml\nmodle: {}\n")
    with pytest.raises(ConfigError, match=r"u\.yaml: unknown key 'modle'"):
        load_recipe(unknown)


def test_probe_demo_extends_demo():
    recipes = Path(__file__).resolve().parents[1] / "recipes"
    demo, probe = load_recipe(recipes / "demo.yaml"), load_recipe(recipes / "probe_demo.yaml")
    assert "base: demo.yaml" in (recipes / "probe_demo.yaml").read_text(encoding="utf-8")
    assert probe.model == demo.model and probe.data == demo.data
    assert probe.preprocess == demo.preprocess
    assert probe.pretrain is None and probe.probe is not None and probe.name == "probe-demo"
