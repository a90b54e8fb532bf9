"""Build models from a :class:`~voxssl.config.model.ModelConfig` (the one place that reads it)."""

from __future__ import annotations

from voxssl.config.model import ModelConfig, embedding_width, level_channels_of
from voxssl.models.fpn import FPN
from voxssl.models.pretrain import PretrainModel
from voxssl.models.pretrain_heads import ProjectionHead, ReconstructionHead


def build_backbone(cfg: ModelConfig) -> FPN:
    """The FPN (with its per-level projections when ``cfg.projection != "none"``)."""
    base, levels, blocks, norm = cfg.base_channels, cfg.num_levels, cfg.blocks_per_stage, cfg.norm
    projection, width = cfg.projection, cfg.projection_channels
    if base is None or levels is None or blocks is None or norm is None:
        raise _unresolved("base_channels / num_levels / blocks_per_stage / norm")
    if projection is None or width is None:
        raise _unresolved("projection / projection_channels")
    return FPN(
        in_channels=cfg.in_channels,
        base_channels=base,
        num_levels=levels,
        blocks_per_stage=blocks,
        norm=norm,
        spatial_dims=cfg.spatial_dims,
        projection=projection,
        projection_channels=width,
        projection_seed=cfg.projection_seed,
    )


def _unresolved(name: str) -> ValueError:
    return ValueError(f"model.{name} is not set (a ModelConfig built without its preset?)")


def build_projector(cfg: ModelConfig) -> ProjectionHead:
    hidden, out = cfg.projector_hidden, cfg.projector_out
    if hidden is None or out is None:  # ModelConfig.__post_init__ fills both from the preset
        raise _unresolved("projector_hidden / projector_out")
    return ProjectionHead(embedding_dim(cfg), hidden, out)


def build_reconstruction_head(cfg: ModelConfig) -> ReconstructionHead | None:
    kind, channels, norm = cfg.reconstruction, cfg.reconstruction_channels, cfg.norm
    if kind is None or channels is None or norm is None:
        raise _unresolved("reconstruction / reconstruction_channels / norm")
    if kind == "none":
        return None
    return ReconstructionHead(feature_channels(cfg)[0], channels, kind, norm, cfg.spatial_dims)


def build_pretrain_model(cfg: ModelConfig) -> PretrainModel:
    """Backbone + projector (+ reconstruction head when ``cfg.reconstruction != "none"``)."""
    return PretrainModel(build_backbone(cfg), build_projector(cfg), build_reconstruction_head(cfg))


def feature_channels(cfg: ModelConfig) -> list[int]:
    """Channels of the decoder maps before projection (``FPN.forward_features``), level 0 first."""
    return level_channels_of(cfg)


def level_channels(cfg: ModelConfig) -> list[int]:
    """Channels of the pyramid that ``backbone(x)`` returns (after projection), level 0 first."""
    if cfg.projection == "none":
        return feature_channels(cfg)
    width, levels = cfg.projection_channels, cfg.num_levels
    if width is None or levels is None:
        raise _unresolved("projection_channels / num_levels")
    return [width] * levels


def embedding_dim(cfg: ModelConfig) -> int:
    """Width of the concatenated voxel embedding: 1008 (vox2vec), 160 (hierarchical)."""
    return embedding_width(cfg)


__all__ = [
    "build_backbone",
    "build_pretrain_model",
    "build_projector",
    "build_reconstruction_head",
    "embedding_dim",
    "feature_channels",
    "level_channels",
]
