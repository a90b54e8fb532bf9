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


def load_recipe(path: str | os.PathLike, overrides: list[str] | None = None) -> Recipe:
    """Load ``path`` (YAML), apply ``key.path=value`` overrides, validate everything."""
    path = Path(path)
    data = apply_overrides(read_yaml(path), list(overrides or []))
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
    "recipe_from_dict",
    "recipe_to_dict",
    "require_section",
    "save_resolved",
]
