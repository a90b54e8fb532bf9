"""The root recipe: one schema for every verb; a verb checks that the sections it needs are there."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voxssl import __version__
from voxssl.config.classify import ClassifyConfig
from voxssl.config.data import DataConfig, PreprocessConfig
from voxssl.config.dinov2 import Dinov2Config
from voxssl.config.downstream import FinetuneConfig, ProbeConfig
from voxssl.config.fewshot import FewShotConfig
from voxssl.config.loader import apply_overrides, from_dict, read_yaml, to_dict
from voxssl.config.model import ModelConfig
from voxssl.config.pretrain import PretrainConfig
from voxssl.errors import ConfigError
from voxssl.utils.atomic import atomic_write_text


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    output_dir: Path = Path("runs")  # each run writes into output_dir/name
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Sections of later stages; None when a recipe does not use them (a verb that needs one says
    # so through require_section). Their schemas live beside this file.
    model: ModelConfig | None = None
    pretrain: PretrainConfig | None = None
    probe: ProbeConfig | None = None
    finetune: FinetuneConfig | None = None
    fewshot: FewShotConfig | None = None
    dinov2: Dinov2Config | None = None
    classify: ClassifyConfig | None = None
    source_file: str = field(default="<recipe>", metadata={"internal": True})

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    if "source_file" in data:
        raise ConfigError(f"{source}: unknown key 'source_file'")
    recipe = from_dict(Recipe, data, source=source)
    recipe.source_file = source
    return recipe


def read_recipe_data(path: str | os.PathLike) -> dict[str, Any]:
    """The recipe file as plain data, with its ``base`` (and theirs) merged in.

    ``base: other.yaml`` (relative to the recipe's folder) starts from every key of that recipe;
    the recipe's own keys win: mappings merge key by key, any other value (a list, a number,
    ``null``) replaces the base's, so ``probe: null`` drops a section the base has.
    """
    return _read_with_bases(Path(path), ())


def _read_with_bases(path: Path, children: tuple[Path, ...]) -> dict[str, Any]:
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: 'base' must be the path of another recipe, got {base!r}")
    base_path = Path(base).expanduser()
    if not base_path.is_absolute():
        base_path = path.parent / base_path
    if not base_path.is_file():
        raise ConfigError(f"{path}: base recipe {base_path} not found (relative to {path.parent})")
    chain = (*children, path.resolve())
    if base_path.resolve() in chain:
        raise ConfigError(f"{path}: 'base' makes a loop ({' -> '.join(map(str, chain))})")
    return _merge(_read_with_bases(base_path, chain), data)


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Load ``path`` (YAML, with its ``base``), apply ``key.path=value`` overrides, validate."""
    path = Path(path)
    data = apply_overrides(read_recipe_data(path), list(overrides or []))
    return recipe_from_dict(data, source=str(path))


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    data = to_dict(recipe)
    data.pop("source_file", None)
    return data


def require_section(recipe: Recipe, section: str, verb: str) -> Any:
    value = getattr(recipe, section)
    if value is None:
        raise ConfigError(
            f"{recipe.source_file}: 'voxssl {verb}' needs a '{section}' section in the recipe"
        )
    return value


def save_resolved(recipe: Recipe, run_dir: Path, filename: str = "recipe.resolved.yaml") -> Path:
    """Write the final recipe (defaults + recipe + overrides) beside a run's outputs."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    header = (
        f"# resolved by voxssl {__version__} on {datetime.datetime.now().isoformat(timespec='seconds')}\n"
        f"# from {recipe.source_file}\n"
    )
    text = header + yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False)
    return atomic_write_text(run_dir / filename, text)


__all__ = [
    "Recipe",
    "load_recipe",
    "read_recipe_data",
    "recipe_from_dict",
    "recipe_to_dict",
    "require_section",
    "save_resolved",
]
