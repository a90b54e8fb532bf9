"""Recipe section ``model``: the backbone (3D FPN), its per-level projection and the pretraining heads.

A *preset* gives the defaults of every architecture field; any key written in the recipe (or set
with ``--set model.key=value``) overrides the preset. After construction every field holds a
concrete value, so ``to_dict(config)`` is the complete architecture (it is what a weights file
stores in its plan) and rebuilding from that dict gives the same network whatever the preset
defaults of a later voxssl version.

Presets (facts from vox2vec and the hierarchical-dense-ssl paper, see docs/models.md):

* ``vox2vec``: base 16, 6 levels (16..512 channels), 2 residual blocks per stage, ~47.6 M
  parameters, voxel embedding = concatenation of all levels = 1008-d, no projection, projector
  1008 -> 1008 -> 1008 -> 128, no reconstruction head.
* ``hierarchical``: base 32, 5 levels (32..512), each level projected by a 1x1x1 conv to 32
  channels -> 5 x 32 = 160-d embedding, projector 160 -> 160 -> 160 -> 128, reconstruction head
  one 1x1x1 conv on the finest level (the public code; ``two_conv`` is the paper text).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

from voxssl.config.loader import from_dict, to_dict

PresetName = Literal["vox2vec", "hierarchical"]
ProjectionKind = Literal["none", "learned", "frozen_random"]
ReconstructionKind = Literal["none", "conv1x1", "two_conv"]
# A MONAI norm spec: a name ("batch", "instance", "group", ...) or [name, {kwargs}], exactly what
# ``monai.networks.layers.utils.get_norm_layer`` accepts, e.g. ["group", {"num_groups": 8}].
NormSpec = str | tuple[str, dict[str, Any]]

PRESETS: dict[str, dict[str, Any]] = {
    "vox2vec": {
        "base_channels": 16,
        "num_levels": 6,
        "blocks_per_stage": 2,
        "norm": "batch",
        "projection": "none",
        "projection_channels": 32,
        "projector_hidden": None,  # None: the embedding width (1008)
        "projector_out": 128,
        "reconstruction": "none",
    },
    "hierarchical": {
        "base_channels": 32,
        "num_levels": 5,
        "blocks_per_stage": 2,
        "norm": "batch",
        "projection": "learned",
        "projection_channels": 32,
        "projector_hidden": None,  # None: the embedding width (160)
        "projector_out": 128,
        "reconstruction": "conv1x1",
    },
}

# Fields whose value comes from the preset when the recipe leaves them out.
_PRESET_FIELDS = tuple(PRESETS["vox2vec"])


@dataclass
class ModelConfig:
    preset: PresetName = "hierarchical"
    in_channels: int = 1  # image channels (multi-sequence MRI: one per sequence)
    spatial_dims: int = 3
    base_channels: int | None = None  # channels of level 0; level i has base * 2**i
    num_levels: int | None = None  # pyramid levels (the input is pooled num_levels - 1 times)
    blocks_per_stage: int | None = None  # pre-activation residual blocks per encoder/decoder stage
    norm: NormSpec | None = None
    # Per-level 1x1x1 projection to ``projection_channels`` before concatenation (balanced pyramid).
    # "frozen_random" reproduces the published hierarchical code (never trained); voxssl seeds it
    # with ``projection_seed`` and saves it with the weights, so it is reproducible.
    projection: ProjectionKind | None = None
    projection_channels: int | None = None
    projection_seed: int = 0
    # Projector MLP (pretraining only): Linear-BN-ReLU twice, then Linear to projector_out, L2-normed.
    projector_hidden: int | None = None  # None: the voxel-embedding width
    projector_out: int | None = None
    # Reconstruction head on the finest level (pretraining only).
    reconstruction: ReconstructionKind | None = None
    reconstruction_channels: int | None = None  # None: in_channels

    def __post_init__(self) -> None:
        # Invalid values raise ValueError; the recipe loader turns it into a ConfigError that names
        # the recipe file.
        if self.preset not in PRESETS:
            raise ValueError(
                f"model.preset must be one of {', '.join(PRESETS)}, got {self.preset!r}"
            )
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.projector_hidden is None:
            self.projector_hidden = embedding_width(self)
        if self.reconstruction_channels is None:
            self.reconstruction_channels = self.in_channels
        if isinstance(self.norm, list):  # from YAML: [name, {kwargs}]
            self.norm = tuple(self.norm)
        self._validate()

    def _validate(self) -> None:
        positive = (
            "in_channels",
            "base_channels",
            "num_levels",
            "blocks_per_stage",
            "projection_channels",
            "projector_hidden",
            "projector_out",
            "reconstruction_channels",
        )
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"model.spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if self.projection not in ("none", "learned", "frozen_random"):
            raise ValueError(
                f"model.projection must be none, learned or frozen_random, got {self.projection!r}"
            )
        if self.reconstruction not in ("none", "conv1x1", "two_conv"):
            raise ValueError(
                f"model.reconstruction must be none, conv1x1 or two_conv, got {self.reconstruction!r}"
            )
        base = self.base_channels  # an int: checked above
        if self.reconstruction == "two_conv" and base is not None and base < 2:
            raise ValueError(
                "model.reconstruction 'two_conv' halves the channels: base_channels must be >= 2"
            )
        norm_name = self.norm if isinstance(self.norm, str) else self.norm[0] if self.norm else None
        if not isinstance(norm_name, str) or not norm_name:
            raise ValueError(f"model.norm must be a name or [name, {{kwargs}}], got {self.norm!r}")


def level_channels_of(config: ModelConfig) -> list[int]:
    """Channels of the decoder maps, level 0 (full resolution) first: base * 2**i."""
    base, levels = config.base_channels, config.num_levels
    if base is None or levels is None:  # __post_init__ fills both from the preset
        raise ValueError("model config without base_channels / num_levels")
    return [base * 2**i for i in range(levels)]


def embedding_width(config: ModelConfig) -> int:
    """Width of the concatenated voxel embedding (after the per-level projection, if any)."""
    if config.projection == "none":
        return sum(level_channels_of(config))
    width, levels = config.projection_channels, config.num_levels
    if width is None or levels is None:  # __post_init__ fills both from the preset
        raise ValueError("model config without projection_channels / num_levels")
    return width * levels


def model_config_from_dict(data: dict[str, Any], source: str = "<plan>") -> ModelConfig:
    """Validated :class:`ModelConfig` from plain data (a recipe section or a weights plan)."""

    return from_dict(ModelConfig, data, where="model", source=source)


def model_config_to_dict(config: ModelConfig) -> dict[str, Any]:
    """Plain, JSON/YAML-able data with every field resolved (norm as a string or [name, kwargs])."""

    data = to_dict(config)
    return {f.name: data[f.name] for f in fields(config)}


__all__ = [
    "PRESETS",
    "ModelConfig",
    "embedding_width",
    "level_channels_of",
    "model_config_from_dict",
    "model_config_to_dict",
]
