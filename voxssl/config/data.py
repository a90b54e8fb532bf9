"""Recipe sections ``data`` (where the scans are, where the cache goes) and ``preprocess``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voxssl.errors import ConfigError

Modality = Literal["ct", "mr"]


def as_modality(value: str, where: str) -> Modality:
    """``value`` checked to be a modality voxssl knows (``where`` names the setting in the error)."""
    if value == "ct":
        return "ct"
    if value == "mr":
        return "mr"
    raise ConfigError(f"{where} must be 'ct' or 'mr', got {value!r}")


@dataclass
class SourceConfig:
    """One data set on disk, read by a dataset adapter (see ``voxssl.data.adapters``)."""

    adapter: str  # btcv | amos | flare | chaos | nako | msd | nnunet | folder
    root: Path
    name: str = ""  # cache sub-folder; defaults to the adapter name
    modality: Modality | None = None  # required by adapters that cannot tell (folder, nako)
    labelled_only: bool = False  # keep only cases that have a label
    options: dict[str, Any] = field(
        default_factory=dict
    )  # adapter-specific, validated by the adapter

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.adapter


@dataclass
class DataConfig:
    sources: list[SourceConfig] = field(default_factory=list)
    cache_dir: Path = Path("cache")
    num_workers: int = 2  # parallel preprocessing processes


@dataclass
class CTPreprocessConfig:
    """CT: resample, crop to the box of voxels above ``crop_threshold_hu``, window to [0, 1]."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)  # mm, RAS axes (x, y, z)
    crop_threshold_hu: float = -500.0  # crop to the box of voxels above this
    window_hu: tuple[float, float] = (-1350.0, 1000.0)  # clip, then scale to [0, 1]
    body_threshold_hu: float = (
        -500.0
    )  # air below this, connected to the border, is outside the body


@dataclass
class MRPreprocessConfig:
    """MR: resample, clip each channel to its percentiles and scale to [0, 1], crop to voxels > threshold."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 2.0)
    percentiles: tuple[float, float] = (0.01, 99.9)  # clip, then scale to [0, 1]
    crop_threshold: float = 0.3  # on the scaled image
    body_threshold: float = (
        0.05  # on the scaled image; darker voxels connected to the border are outside
    )


@dataclass
class PreprocessConfig:
    ct: CTPreprocessConfig = field(default_factory=CTPreprocessConfig)
    mr: MRPreprocessConfig = field(default_factory=MRPreprocessConfig)
    # A NIfTI label must share its image's grid: shapes equal and RAS affines within this
    # fraction of the smallest voxel size (absorbs float32 header rounding, nothing more).
    label_grid_tolerance: float = 0.05
    # Images that declare more voxels are refused before they are read (None: $VOXSSL_MAX_VOXELS,
    # else 2**30). Guards against a header that lies about its shape.
    max_voxels: int | None = None
    # Refuse a label map among the scans (a few integer values) and a scan whose intensities
    # contradict its source's modality (an MR in a CT source) before anything is cached.
    check_scans: bool = True

    def for_modality(self, modality: str) -> CTPreprocessConfig | MRPreprocessConfig:
        if modality not in ("ct", "mr"):
            raise ValueError(f"modality must be 'ct' or 'mr', got {modality!r}")
        return self.ct if modality == "ct" else self.mr
