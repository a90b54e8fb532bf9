"""The root recipe: one schema for every verb; a verb checks that the sections it needs are there."""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voxssl import __version__
from voxssl.config.data import DataConfig, PreprocessConfig
from voxssl.config.loader import apply_overrides, from_dict, read_yaml, to_dict
from voxssl.errors import ConfigError


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    output_dir: Path = Path("runs")  # each run writes into output_dir/name
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    # Sections of later stages; None when a recipe does not use them. Their schemas live beside
    # this file (model.py, pretrain.py, downstream.py, fewshot.py, dinov2.py, classify.py) and are
    # attached in _section_schemas.
    model: Any = None
    pretrain: Any = None
    probe: Any = None
    finetune: Any = None
    fewshot: Any = None
    dinov2: Any = None
    classify: Any = None
    source_file: str = field(default="<recipe>", metadata={"internal": True})

    @property
    def run_dir(self) -> Path:
        return self.output_dir / self.name


def _section_schemas() -> dict[str, type]:
    """Schemas of the optional sections, imported lazily so that each stays in its own module."""
    import importlib

    schemas = {}
    for section, (module, cls) in {
        "model": ("voxssl.config.model", "ModelConfig"),
        "pretrain": ("voxssl.config.pretrain", "PretrainConfig"),
        "probe": ("voxssl.config.downstream", "ProbeConfig"),
        "finetune": ("voxssl.config.downstream", "FinetuneConfig"),
        "fewshot": ("voxssl.config.fewshot", "FewShotConfig"),
        "dinov2": ("voxssl.config.dinov2", "Dinov2Config"),
        "classify": ("voxssl.config.classify", "ClassifyConfig"),
    }.items():
        try:
            schemas[section] = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError):
            continue
    return schemas


def recipe_from_dict(data: dict[str, Any], source: str = "<recipe>") -> Recipe:
    data = dict(data)
    if "source_file" in data:
        raise ConfigError(f"{source}: unknown key 'source_file'")
    sections = _section_schemas()
    built_sections = {}
    for section in ("model", "pretrain", "probe", "finetune", "fewshot", "dinov2", "classify"):
        if section in data:
            value = data.pop(section)
            if value is None:
                continue
            if section not in sections:
                raise ConfigError(
                    f"{source}: section '{section}' is not supported by this voxssl version"
                )
            built_sections[section] = from_dict(
                sections[section], value, where=section, source=source
            )
    recipe = from_dict(Recipe, data, source=source)
    for section, value in built_sections.items():
        setattr(recipe, section, value)
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
    from voxssl.utils.atomic import atomic_write_text

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
_ = dataclasses
