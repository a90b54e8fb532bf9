"""Recipe section ``dinov2``: continued DINOv2 self-supervised training of a ViT on 2D medical images.

Defaults are DINOv2's own training configuration (facebookresearch/dinov2
``configs/ssl_default_config.yaml``, Oquab et al., 2023) with the changes MediDino's public code
makes for ViT-S/14 (Lange & Shekel, 2024; Matan-Lange/MediDino ``ssl_default_config.yaml``):
Sinkhorn-Knopp targets, teacher momentum 0.994, weight decay ending at 0.2, base lr 2e-4, drop
path 0.4 growing with depth, local crops of 98 px. Every number a recipe may change lives here;
docs/dinov2.md gives the source of each.

Schedules are in optimizer steps (DINOv2 counts epochs of ``OFFICIAL_EPOCH_LENGTH`` iterations:
MediDino's 100 epochs x 100 iterations = 10,000 steps, warm-up 10 epochs = 1,000 steps, teacher
temperature warm-up 30 epochs = 3,000 steps, last layer frozen for 1 epoch = 100 steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from voxssl.config.fewshot import DinoSize


def _check_fraction_range(name: str, low_high: tuple[float, float]) -> None:
    low, high = low_high
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {low_high}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass
class ViTConfig:
    """The ViT that is trained: a released DINOv2 (weights from ``weights``, the voxssl cache or the
    hub, exactly as ``fewshot.encoder``), or a randomly initialised one (``pretrained: false``).

    The architecture overrides (``hidden_size`` ...) apply to a random initialisation only (tests,
    the CPU demo); loaded weights bring their own architecture.
    """

    size: DinoSize = "small"
    weights: Path | None = None
    pretrained: bool = True
    hidden_size: int | None = None
    num_hidden_layers: int | None = None
    num_attention_heads: int | None = None
    patch_size: int | None = None
    drop_path_rate: float = 0.4  # student only (the teacher has none), MediDino; DINOv2 ViT-L 0.4
    drop_path_uniform: bool = False  # False: rate i / (depth - 1) x drop_path_rate in block i
    layerscale_init: float = 1.0e-5  # random initialisation only (DINOv2's LayerScale init)

    def __post_init__(self) -> None:
        overrides = (
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.patch_size,
        )
        if self.pretrained and any(v is not None for v in overrides):
            raise ValueError(
                "vit.hidden_size/num_hidden_layers/num_attention_heads/patch_size change a random "
                "initialisation only; set vit.pretrained: false, or drop them"
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"vit.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    def architecture_overrides(self) -> dict[str, int]:
        names = ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


@dataclass
class HeadConfig:
    """A DINO / iBOT head: MLP D -> hidden -> ... -> bottleneck, L2 norm, K weight-normed prototypes."""

    num_prototypes: int = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    num_layers: int = 3

    def __post_init__(self) -> None:
        if min(self.num_prototypes, self.hidden_dim, self.bottleneck_dim, self.num_layers) < 1:
            raise ValueError("head sizes must be >= 1")


@dataclass
class LossConfig:
    dino_weight: float = 1.0
    koleo_weight: float = 0.1
    ibot_weight: float = 1.0
    student_temperature: float = 0.1
    targets: Literal["centering", "sinkhorn_knopp"] = "sinkhorn_knopp"  # DINOv2 default: centering
    center_momentum: float = 0.9
    sinkhorn_iterations: int = 3
    mask_probability: float = 0.5  # fraction of the global crops that get an iBOT mask
    mask_ratio: tuple[float, float] = (0.1, 0.5)  # fraction of the patches masked
    ibot_separate_head: bool = False
    ibot_head: HeadConfig = field(default_factory=HeadConfig)  # used when ibot_separate_head

    def __post_init__(self) -> None:
        if self.dino_weight <= 0:
            raise ValueError("loss.dino_weight must be > 0 (the DINO loss is the objective)")
        if self.koleo_weight < 0 or self.ibot_weight < 0:
            raise ValueError("loss.koleo_weight and loss.ibot_weight must be >= 0")
        if self.student_temperature <= 0:
            raise ValueError("loss.student_temperature must be > 0")
        _check_probability("loss.mask_probability", self.mask_probability)
        _check_fraction_range("loss.mask_ratio", self.mask_ratio)
        if self.ibot_weight > 0 and self.mask_probability == 0:
            raise ValueError("loss.ibot_weight > 0 needs loss.mask_probability > 0")


@dataclass
class TeacherConfig:
    momentum: float = 0.994  # EMA momentum, cosine schedule to final_momentum (DINOv2: 0.992)
    final_momentum: float = 1.0
    warmup_temperature: float = 0.04
    temperature: float = 0.07
    temperature_warmup_steps: int = 3000

    def __post_init__(self) -> None:
        if not 0.0 <= self.momentum <= self.final_momentum <= 1.0:
            raise ValueError("teacher: need 0 <= momentum <= final_momentum <= 1")
        if self.temperature <= 0 or self.warmup_temperature <= 0:
            raise ValueError("teacher temperatures must be > 0")


@dataclass
class OptimConfig:
    """AdamW; lr = base_lr x sqrt(batch_size x ranks / 1024) (``lr_scaling: sqrt_wrt_1024``) with a
    linear warm-up from 0, then a cosine to ``min_lr``; weight decay cosine from ``weight_decay`` to
    ``weight_decay_end``; layer-wise lr decay; the prototypes' lr is 0 for ``freeze_last_layer_steps``."""

    steps: int = 10_000
    batch_size: int = 256  # images per rank and step (MediDino: 256 on one A100)
    base_lr: float = 2.0e-4  # DINOv2 default 4e-3 (ViT-L recipes 2e-4)
    lr_scaling: Literal["sqrt_wrt_1024", "none"] = "sqrt_wrt_1024"
    warmup_steps: int = 1000
    min_lr: float = 1.0e-6
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2  # DINOv2 default 0.4
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float = 3.0  # per sub-network (backbone, each head); 0: no clipping
    freeze_last_layer_steps: int = 100
    layerwise_decay: float = 0.9
    patch_embed_lr_mult: float = 0.2

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(
                "optim.steps must be >= 1 and optim.batch_size >= 2 (KoLeo needs pairs)"
            )
        if self.base_lr <= 0 or self.min_lr < 0:
            raise ValueError("optim.base_lr must be > 0 and optim.min_lr >= 0")
        if self.warmup_steps < 0 or self.freeze_last_layer_steps < 0:
            raise ValueError("optim.warmup_steps and optim.freeze_last_layer_steps must be >= 0")
        if not 0 < self.layerwise_decay <= 1:
            raise ValueError("optim.layerwise_decay must be in (0, 1]")

    def lr(self, world_size: int) -> float:
        if self.lr_scaling == "none":
            return self.base_lr
        return self.base_lr * (self.batch_size * world_size / 1024) ** 0.5


@dataclass
class CropsConfig:
    """DINOv2's multi-crop augmentation (:mod:`voxssl.transforms.multicrop`)."""

    global_size: int = 224
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_number: int = 8
    local_size: int = 98  # DINOv2 96; MediDino 98, a multiple of the 14 px patch
    local_scale: tuple[float, float] = (0.05, 0.32)
    hflip_prob: float = 0.5
    vflip_prob: float = 0.0  # MediDino adds 0.5
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    # Gaussian blur probability of global crop 1, global crop 2, local crops: what the authors'
    # code does (its GaussianBlur inverts p); the DINOv2 paper's text says (1.0, 0.1, 0.5).
    blur_prob: tuple[float, float, float] = (0.0, 0.9, 0.5)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.2

    def __post_init__(self) -> None:
        _check_fraction_range("crops.global_scale", self.global_scale)
        _check_fraction_range("crops.local_scale", self.local_scale)
        for name in ("hflip_prob", "vflip_prob", "jitter_prob", "solarize_prob"):
            _check_probability(f"crops.{name}", getattr(self, name))
        for p in self.blur_prob:
            _check_probability("crops.blur_prob", p)
        if self.local_number < 0 or min(self.global_size, self.local_size) < 1:
            raise ValueError("crops sizes must be >= 1 and crops.local_number >= 0")


@dataclass
class ImageDataConfig:
    """Where the unlabelled 2D images come from: axial slices of the preprocessed cache and/or
    plain image folders (PNG, JPEG, DICOM files, searched recursively; labels are not used)."""

    cache: bool = True  # axial slices of data.cache_dir
    cache_sources: list[str] = field(default_factory=list)  # [] = every source of the cache
    min_body_fraction: float = 0.05  # skip slices whose body mask covers less of the slice
    folders: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_body_fraction < 1.0:
            raise ValueError("data.min_body_fraction must be in [0, 1)")
        if not self.cache and not self.folders:
            raise ValueError("data: no images (cache is false and folders is empty)")


@dataclass
class Dinov2Config:
    vit: ViTConfig = field(default_factory=ViTConfig)
    dino_head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    normalise_imagenet: bool = True  # grey -> RGB, ImageNet mean/std (what DINOv2 weights expect)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    num_workers: int = 2
    prefetch_factor: int = 2
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0: torch's default
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    log_every: int = 10
    image_every: int = 250

    def __post_init__(self) -> None:
        if self.num_workers < 0 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("num_workers must be >= 0, checkpoint_every and log_every >= 1")
        if self.image_every < 1:
            raise ValueError("image_every must be >= 1")


#: ``dinov2`` fields that may change between an interrupted run and its resumption.
RESUMABLE_FIELDS = frozenset(
    {
        "num_workers",
        "prefetch_factor",
        "cpu_threads",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "image_every",
        "device",
    }
)

__all__ = [
    "RESUMABLE_FIELDS",
    "CropsConfig",
    "Dinov2Config",
    "HeadConfig",
    "ImageDataConfig",
    "LossConfig",
    "OptimConfig",
    "TeacherConfig",
    "ViTConfig",
]
