"""Recipe sections ``probe`` (linear / non-linear probe on a frozen backbone) and ``finetune``.

Defaults are the published protocols (seed 004 "hierarchical dense SSL" and vox2vec):
45K steps, batch 7, Adam 3e-4, patches 128x128x32 with half of them centred on foreground,
sigmoid BCE + soft Dice restricted to the body, sliding window with overlap 0.5 and Gaussian
blending, threshold 0.5. Fine-tuning freezes the backbone for 15K steps, then ramps its learning
rate exponentially up to the head's over 1,200 steps. Every number lives here or in a recipe.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from voxssl.errors import ConfigError
from voxssl.utils.triple import int_triple
from voxssl.vocabulary import ORGANS, organ_id

#: The 13 BTCV organs, in BTCV id order (canonical ids 1-13).
BTCV_CLASSES = [
    "spleen",
    "right_kidney",
    "left_kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior_vena_cava",
    "portal_splenic_vein",
    "pancreas",
    "right_adrenal_gland",
    "left_adrenal_gland",
]

CVScheme = Literal["btcv3", "btcv5", "amos_mri5", "kfold", "holdout"]


@dataclass
class HeadConfig:
    """The segmentation head on the backbone's feature pyramid.

    ``linear``: vox2vec's FPNLinearHead, per level a 1x1x1 conv to the classes (bias on level 0
    only), upsampled to full resolution and summed: a linear map of the voxel embedding.
    ``nonlinear``: a coarse-to-fine decoder of 1x1x1 residual blocks of width ``hidden_channels``.
    ``vox2vec_nonlinear``: vox2vec's ``FPNNonLinearHead`` (a 1x1x1 decoder at the pyramid's own
    widths), the non-linear head of the published code.
    ``feature_norm: batch`` standardises each embedding channel before the head (BatchNorm without
    affine parameters; still a linear map of the embedding at inference). Use it to compare
    backbones whose feature scales differ (random init vs pretrained); ``none`` is vox2vec's head.
    ``features``: the pyramid the head reads, ``projected`` (the voxel embedding: per-level
    projections applied when the model has them) or ``raw`` (the decoder maps before projection,
    what the authors' code probed); the same rule for voxssl-pretrained and imported weights
    (:mod:`voxssl.models.features`).
    """

    kind: Literal["linear", "nonlinear", "vox2vec_nonlinear"] = "linear"
    hidden_channels: int = 128  # nonlinear only
    blocks_per_level: int = 1  # nonlinear only: residual blocks after each merge
    feature_norm: Literal["none", "batch"] = "none"
    features: Literal["projected", "raw"] = "projected"

    def __post_init__(self) -> None:
        if self.hidden_channels < 1 or self.blocks_per_level < 0:
            raise ValueError("head.hidden_channels must be >= 1 and head.blocks_per_level >= 0")


@dataclass
class CrossValidationConfig:
    """Which cases train and which test.

    ``btcv3`` (seed 004) / ``btcv5`` (vox2vec) / ``amos_mri5`` fix k; ``kfold`` uses ``k``;
    ``holdout`` trains on every case and tests on ``test_cases``. Fold assignment is a seeded
    permutation of the sorted case ids (the same as scikit-learn's ``KFold(shuffle=True,
    random_state=seed)``), so it is reproducible across machines. ``split_file`` reuses a
    ``splits.json`` written by an earlier run instead.
    """

    scheme: CVScheme = "kfold"
    k: int = 5
    seed: int = 42
    folds: list[int] | None = None  # run only these folds (None: all)
    split_file: Path | None = None
    test_cases: list[str] = field(default_factory=list)  # holdout only
    #: low-data experiments: train on the first n cases of a seeded permutation of each fold's
    #: training cases (nested: the 4 are among the 8). "all" = the whole training fold.
    n_train: list[int | Literal["all"]] = field(default_factory=lambda: ["all"])
    val_fraction: float = 0.0  # training cases held out for validation Dice during training

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError("cv.k must be >= 2")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("cv.val_fraction must be in [0, 1)")
        for n in self.n_train:
            if n != "all" and n < 1:
                raise ValueError(f"cv.n_train entries must be >= 1 or 'all', got {n}")


@dataclass
class DownstreamConfig:
    """Everything the probe and fine-tuning share: data, sampling, loss, inference, metrics."""

    # -- what to segment
    classes: list[int | str] = field(default_factory=lambda: list(BTCV_CLASSES))
    source: str | None = None  # cache source (data.sources[].name) with the labels; None: all
    head: HeadConfig = field(default_factory=HeadConfig)
    # single-channel weights on multi-channel scans (e.g. 4 Dixon contrasts): "repeat" copies the
    # first conv over the channels scaled by 1/C (same features on identical channels); "refuse" stops
    adapt_channels: Literal["repeat", "refuse"] = "refuse"
    # -- training
    patch_size: tuple[int, int, int] = (128, 128, 32)
    batch_size: int = 7
    steps: int = 45_000
    lr: float = 3e-4
    lr_schedule: Literal["constant", "cosine"] = (
        "constant"  # of the head's lr: cosine decays it to 0 at `steps`
    )
    weight_decay: float = 0.0
    foreground_fraction: float = 0.5  # patches centred on a voxel of a (random) target class
    loss: Literal["bce", "ce"] = "bce"  # sigmoid BCE per class, or softmax CE with background
    dice_weight: float = 1.0  # + soft Dice (MONAI MaskedDiceLoss); 0 disables it
    body_restricted_loss: bool = True  # vox2vec: the loss only counts voxels inside the body mask
    grad_clip: float = 0.0  # 0: no clipping
    amp: bool = True  # bf16 autocast, on GPU only (never on CPU)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int = 0  # torch intra-op threads on CPU; 0 = torch's default (as in pretrain)
    log_every: int = 50
    val_every: int = 0  # validation Dice on the cv.val_fraction cases every N steps (0: never)
    tensorboard: bool = True  # <run>/<fold>/tensorboard: loss, learning rates, validation Dice
    # -- inference and metrics
    sw_roi_size: tuple[int, int, int] | None = None  # inference window; None: patch_size
    sw_overlap: float = 0.5
    sw_mode: Literal["gaussian", "constant"] = "gaussian"
    sw_batch_size: int = 2
    threshold: float = 0.5  # bce: a voxel is foreground where the best class' probability >= this
    hd95: bool = False
    write_predictions: bool = True  # NIfTI in the original geometry of each test case
    overlay_slices: int = 3  # axial slices per case in the PNG overlay; 0 disables
    cv: CrossValidationConfig = field(default_factory=CrossValidationConfig)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ValueError("classes must list at least one organ")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError("foreground_fraction must be in [0, 1]")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError("sw_overlap must be in [0, 1)")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        if min(self.patch_size) < 1 or self.batch_size < 1 or self.steps < 0 or self.lr <= 0:
            raise ValueError("patch_size, batch_size and lr must be positive, steps >= 0")
        try:  # validate names / ids early; from_dict adds the recipe file and section
            self.class_ids()
        except ConfigError as err:
            raise ValueError(str(err)) from None

    @property
    def inference_roi(self) -> tuple[int, int, int]:
        """Sliding-window size: ``sw_roi_size``, or the training patch. The FPN is fully
        convolutional, so a larger window than the training patch is valid and much faster on CPU."""
        return int_triple(self.sw_roi_size if self.sw_roi_size is not None else self.patch_size)

    def class_ids(self) -> list[int]:
        """Canonical ids of ``classes``; output channel c of the head is ``class_ids()[c]``."""

        ids = []
        for entry in self.classes:
            if isinstance(entry, int):
                if entry not in ORGANS:
                    raise ConfigError(
                        f"classes: {entry} is not a canonical organ id (1-{max(ORGANS)})"
                    )
                ids.append(entry)
            else:
                try:
                    ids.append(organ_id(entry))
                except KeyError as err:
                    raise ConfigError(f"classes: {err.args[0]}") from None
        if len(set(ids)) != len(ids):
            raise ConfigError(f"classes: an organ is listed twice ({self.classes})")
        return ids


@dataclass
class ProbeConfig(DownstreamConfig):
    """``voxssl linear-probe``: a head trained on a frozen backbone (kept in eval mode).

    ``feature_cache``: compute each training case's feature pyramid once, on the whole volume, and
    train the head on patches cut from it (:mod:`voxssl.eval.feature_cache`): the features the head
    trains on are then those of whole-volume inference, not those of an isolated patch, and a step
    costs the head only. ``auto`` caches when the cached features of the training cases fit in
    ``feature_cache_max_gib``; ``true`` requires it; ``false`` recomputes the features on every patch
    (vox2vec's protocol). With the cache, ``patch_size`` must be a multiple of 2^(levels-1).
    """

    feature_cache: bool | Literal["auto"] = "auto"
    feature_cache_max_gib: float = 8.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.feature_cache_max_gib <= 0:
            raise ValueError("feature_cache_max_gib must be > 0")


@dataclass
class FinetuneConfig(DownstreamConfig):
    """``voxssl fine-tune``: head + backbone; backbone frozen for ``frozen_steps``, then its lr
    ramps exponentially from ``backbone_lr_start`` to ``lr`` over ``ramp_steps``."""

    head: HeadConfig = field(default_factory=lambda: HeadConfig(kind="nonlinear"))
    frozen_steps: int = 15_000
    ramp_steps: int = 1_200
    # Seed 004's start value is lost in its text; its code (PyTorch Lightning's BackboneFinetuning,
    # default initial_denom_lr 10, doubling per 300-step epoch) starts at lr / 10 and reaches lr
    # after 4 epochs = the paper's 1,200 steps.
    backbone_lr_start: float = 3e-5
    from_scratch: bool = False  # random initialisation, same budget (the baseline)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frozen_steps < 0 or self.ramp_steps < 0:
            raise ValueError("frozen_steps and ramp_steps must be >= 0")
        if not 0 < self.backbone_lr_start <= self.lr:
            raise ValueError("backbone_lr_start must be in (0, lr]")


__all__ = [
    "BTCV_CLASSES",
    "CrossValidationConfig",
    "DownstreamConfig",
    "FinetuneConfig",
    "HeadConfig",
    "ProbeConfig",
]
