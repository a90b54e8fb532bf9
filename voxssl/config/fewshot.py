"""Recipe section ``fewshot``: 2D few-shot segmentation with ALPNet (SSL-ALPNet / DINOv2-ALPNet).

Defaults are the published recipe (Ouyang et al., ECCV 2020; Ayzenberg et al., ISBI 2024): see
docs/fewshot.md for the source of every number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

EncoderType = Literal["dinov2", "cnn", "voxssl3d", "resnet101"]
DinoSize = Literal["small", "base", "large", "giant"]
InputMode = Literal["repeat", "stack", "adapter"]


@dataclass
class LoRAConfig:
    enabled: bool = True
    rank: int = 4
    alpha: float = 4.0  # scale = alpha / rank = 1
    dropout: float = 0.0


@dataclass
class EncoderConfig:
    type: EncoderType = "dinov2"
    size: DinoSize = "large"
    # Where the DINOv2 weights come from: a safetensors file or a Hugging Face-format folder; None =
    # the voxssl weights cache ($VOXSSL_HOME/dinov2/<size>), then the hub when online. For resnet101:
    # the local file of torchvision's deeplabv3_resnet101_coco-586e9e4e.pth (required if pretrained).
    weights: Path | None = None
    pretrained: bool = True  # false: random initialisation (tests, benchmarks)
    input_mode: InputMode = (
        "repeat"  # slice tiled to RGB | slices z-1, z, z+1 | learned slice adapter
    )
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    normalise_imagenet: bool = (
        True  # [0, 1] slice -> ImageNet mean/std (what DINOv2 was trained on)
    )
    cnn_channels: list[int] = field(default_factory=lambda: [16, 32, 64])  # tiny CNN encoder only
    voxssl_weights: Path | None = None  # voxssl 3D backbone (encoder type voxssl3d)
    voxssl_trainable: bool = (
        False  # fine-tune the 3D backbone in episodes (default: frozen, no training)
    )
    slab_slices: int = 3  # voxssl3d: slices z-k..z+k fed to the 3D FPN (odd)
    # resnet101 (SSL-ALPNet's DeepLabv3 encoder): bottleneck blocks per stage; weights = a local
    # torchvision deeplabv3_resnet101_coco checkpoint (voxssl.fewshot.resnet)
    resnet_layers: list[int] = field(default_factory=lambda: [3, 4, 23, 3])


@dataclass
class SuperpixelConfig:
    scale: float = 1.0  # Felzenszwalb parameters on the preprocessed slice
    sigma: float = 1.0
    min_size: int = 400
    cache_subdir: str = "superpixels"  # beside the volumes, inside data.cache_dir
    num_workers: int = 2


@dataclass
class AugmentConfig:
    rotate_deg: float = 5.0  # +- uniform
    shift_px: float = 5.0  # +- uniform, in pixels of the (resized) slice
    shear_deg: float = 5.0
    scale: tuple[float, float] = (0.9, 1.2)
    elastic_alpha: float = 10.0  # pixels
    elastic_sigma: float = 5.0  # pixels
    gamma: tuple[float, float] = (0.5, 1.5)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step_every: int = 1000  # lr x lr_step_gamma every lr_step_every iterations
    lr_step_gamma: float = 0.95
    steps: int = 100_000
    log_every: int = 100
    checkpoint_every: int = 5000


@dataclass
class ALPConfig:
    train_window: tuple[int, int] = (4, 4)  # pooling window on the feature grid while training
    eval_window: tuple[int, int] = (2, 2)
    mask_fraction: float = 0.95  # keep a local prototype where the pooled mask exceeds this
    feature_grid: int = 32  # features are resized to this grid (train)
    eval_feature_grid: int = 32
    temperature: float = 20.0  # similarity = temperature * cosine
    cosine_eps: float = 1e-4
    class_weights: tuple[float, float] = (0.05, 1.0)  # background, foreground
    align_weight: float = 1.0  # PANet prototype-alignment loss
    # The alignment cross-entropy of both published codes has no class weights.
    align_weighted: bool = False
    # Support masks to the feature grid: nearest (DINOv2-ALPNet's code) or bilinear (SSL-ALPNet's).
    support_mask_resize: Literal["nearest", "bilinear"] = "nearest"
    # reference: the foreground gets local prototypes only if the support mask pooled with the
    # training window (scaled to the grid) reaches mask_fraction somewhere, also at test time
    # (both published codes); any_window: whenever a window of the current size qualifies.
    local_rule: Literal["reference", "any_window"] = "reference"


@dataclass
class TTTConfig:
    enabled: bool = False
    steps: int = 100  # SGD steps per query slice
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    reset: Literal["slice", "scan", "never"] = "slice"  # restore the trained weights after each ...


@dataclass
class EvalConfig:
    setting: Literal[1, 2] = 2  # 2: training slices containing a test class are removed
    # Organs tested together; setting 2 excludes the whole group from training.
    organ_groups: list[list[str]] = field(
        default_factory=lambda: [["left_kidney", "right_kidney"], ["spleen", "liver"]]
    )
    chunks: int = 3  # C: support slices at the middles of C equal parts of the organ range
    folds: int = 5
    # next_scan: the scan after the fold in the sorted circular list (both published codes);
    # index: the support_index-th scan outside the fold (sorted order)
    support_rule: Literal["next_scan", "index"] = "next_scan"
    support_index: int = 0  # support_rule index only
    # A voxssl-fewshot-splits/1 JSON listing every fold's query cases and support case (e.g. the
    # published codes' folds in recipes/paper/splits/); overrides folds and support_rule.
    split_file: Path | None = None
    # reference: support slice = element floor(p n) of the support's organ slices, query slice z in
    # chunk floor((z - z_min) / ((z_max - z_min) / C)) (the published codes); equal: C equal parts
    chunk_rule: Literal["reference", "equal"] = "reference"
    # organ_range: every query slice in [z_min, z_max] is segmented and scored (SSL-ALPNet's code);
    # organ_present: only the slices whose label contains the organ (DINOv2-ALPNet's code,
    # skip_no_organ_slices=True). Both use the ground truth to choose the slices.
    scored_slices: Literal["organ_range", "organ_present"] = "organ_range"
    cca: Literal["none", "2d", "3d"] = "none"
    query_batch: int = 8  # query slices per forward pass (the support is encoded once per chunk)
    write_predictions: bool = True
    ttt: TTTConfig = field(default_factory=TTTConfig)


@dataclass
class FewShotConfig:
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    image_size: int = 256  # in-plane resize of every slice (training)
    eval_image_size: int = 256  # 672 in the DINOv2 paper's testing
    source: str | None = None  # cache source to use; None = every labelled/unlabelled case
    superpixels: SuperpixelConfig = field(default_factory=SuperpixelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    alp: ALPConfig = field(default_factory=ALPConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    min_superpixel_pixels: int = 1  # skip superpixels smaller than this when sampling episodes
    seed: int = 1234
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp_bf16: bool = True  # bf16 autocast on GPU only
    cpu_threads: int = (
        0  # torch intra-op threads on CPU; 0 = torch's default (small models: 1 is fastest)
    )

    def __post_init__(self) -> None:
        if self.image_size < 14 or self.eval_image_size < 14:
            raise ValueError("image_size and eval_image_size must be at least 14")
        if self.eval.chunks < 1 or self.eval.folds < 2:
            raise ValueError("eval.chunks must be >= 1 and eval.folds >= 2")
        if not 0.0 < self.alp.mask_fraction <= 1.0:
            raise ValueError("alp.mask_fraction must be in (0, 1]")
        if self.encoder.slab_slices < 1 or self.encoder.slab_slices % 2 == 0:
            raise ValueError("encoder.slab_slices must be a positive odd number")
        if len(self.encoder.resnet_layers) != 4 or min(self.encoder.resnet_layers) < 1:
            raise ValueError("encoder.resnet_layers must list 4 positive block counts")
        if self.encoder.type == "voxssl3d" and self.encoder.voxssl_weights is None:
            raise ValueError("encoder.voxssl_weights is required when encoder.type is voxssl3d")


__all__ = [
    "ALPConfig",
    "AugmentConfig",
    "EncoderConfig",
    "EvalConfig",
    "FewShotConfig",
    "LoRAConfig",
    "OptimConfig",
    "SuperpixelConfig",
    "TTTConfig",
]
