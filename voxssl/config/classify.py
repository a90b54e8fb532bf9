"""Recipe section ``classify``: image- or slice-level classification with a DINOv2 ViT, k-fold AUC.

Defaults follow MediDino's fine-tuning (Lange & Shekel, 2024, section 5.2, and its public
``finetune/`` code): full fine-tuning for 30 epochs, Adam, lr 1e-5, batch 32, 224 x 224 inputs,
a Linear(D, 256)-ReLU-Linear(256, classes) head on the CLS token, binary cross-entropy on one
logit for two classes, the model of the lowest validation loss kept, 5 folds, AUC per fold. The
training augmentation is theirs: rotation +-10 degrees, horizontal flip, a random resized crop of
scale 0.9-1.1, shear +-10 degrees, translation +-10 %.

Data (``classify.data``):

- ``kind: cache``: axial slices of the preprocessed cache, labelled from the label maps:
  ``task: contains`` is binary ("the slice contains the liver": at least ``min_pixels`` voxels of
  the one organ in ``organs``); ``task: largest`` is multi-class (the organ of ``organs`` with the
  most voxels in the slice, plus a ``none`` class when ``none_class``). Folds split *cases*, never
  slices of one scan.
- ``kind: folder``: ``root/<class>/...`` images (PNG, JPEG, DICOM); ``classes`` fixes the class
  order (the second of two is the positive class). Folds are stratified by class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class ClassifyDataConfig:
    kind: Literal["cache", "folder"] = "cache"
    # -- kind: cache
    source: str | None = None  # data.sources[].name; None: every labelled case
    task: Literal["contains", "largest"] = "contains"
    organs: list[str | int] = field(default_factory=lambda: ["liver"])
    none_class: bool = True  # largest: slices without any of the organs are class "none"
    min_pixels: int = 1  # voxels of an organ for it to count as present in a slice
    min_body_fraction: float = 0.05  # skip slices that are mostly air
    # -- kind: folder
    root: Path | None = None
    classes: list[str] = field(default_factory=list)  # [] = the sub-folders, sorted

    def __post_init__(self) -> None:
        if self.kind == "folder" and self.root is None:
            raise ValueError("data.root is required when data.kind is folder")
        if self.kind == "cache":
            if not self.organs:
                raise ValueError("data.organs must name at least one organ")
            if self.task == "contains" and len(self.organs) != 1:
                raise ValueError(
                    "data.task 'contains' is binary: give exactly one organ in data.organs "
                    "(use task 'largest' for several)"
                )
            if self.task == "largest" and len(self.organs) + int(self.none_class) < 2:
                raise ValueError(
                    "data.task 'largest' needs two classes (two organs, or none_class)"
                )
        if self.min_pixels < 1 or not 0.0 <= self.min_body_fraction < 1.0:
            raise ValueError("data.min_pixels must be >= 1 and data.min_body_fraction in [0, 1)")


@dataclass
class ClassifyAugmentConfig:
    enabled: bool = True
    rotate_deg: float = 10.0
    hflip_prob: float = 0.5
    crop_scale: tuple[float, float] = (0.9, 1.1)  # random resized crop (area fraction)
    shear_deg: float = 10.0
    translate: float = 0.1  # fraction of the image size, each axis


@dataclass
class ClassifyCVConfig:
    """k folds of the cases (cache) or images (folder; stratified by class). From each training
    part ``val_fraction`` is held out to pick the epoch of the lowest validation loss.
    ``split_file`` reuses a splits.json (ids: case keys, or image paths relative to the root)."""

    k: int = 5
    seed: int = 42
    folds: list[int] | None = None  # run only these folds (None: all)
    val_fraction: float = 0.2
    split_file: Path | None = None

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError("cv.k must be >= 2")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("cv.val_fraction must be in [0, 1)")


@dataclass
class ClassifyConfig:
    data: ClassifyDataConfig = field(default_factory=ClassifyDataConfig)
    mode: Literal["fine_tune", "linear_probe"] = "fine_tune"
    head: Literal["mlp", "linear"] = "mlp"  # mlp: Linear(D, hidden)-ReLU-Linear(hidden, classes)
    head_hidden: int = 256
    features: Literal["cls", "cls_mean"] = "cls"  # cls_mean: CLS and the mean patch token
    image_size: int = 224
    normalise_imagenet: bool = True  # MediDino's fine-tuning code feeds [0, 1] RGB (false)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1.0e-5
    weight_decay: float = 0.0
    augment: ClassifyAugmentConfig = field(default_factory=ClassifyAugmentConfig)
    cv: ClassifyCVConfig = field(default_factory=ClassifyCVConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "fp32"] = "auto"  # bf16 autocast on GPU, fp32 on CPU
    num_workers: int = 2
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0: torch's default

    def __post_init__(self) -> None:
        if self.image_size < 14 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("image_size must be >= 14, epochs and batch_size >= 1")
        if self.lr <= 0 or self.weight_decay < 0 or self.head_hidden < 1:
            raise ValueError("lr must be > 0, weight_decay >= 0, head_hidden >= 1")


__all__ = [
    "ClassifyAugmentConfig",
    "ClassifyCVConfig",
    "ClassifyConfig",
    "ClassifyDataConfig",
]
