"""Recipe section ``pretrain``: everything the pretraining loop, the view generator and the
augmentations need. Every number of a published configuration lives here (defaults = the seed
paper, "Self-supervised learning of dense hierarchical representations", built on vox2vec), so a
recipe only lists what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from voxssl.config.downstream import HeadConfig, ProbeConfig


def _check_range(name: str, low_high: tuple[float, float], minimum: float | None = None) -> None:
    low, high = low_high
    if low > high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {low_high}")
    if minimum is not None and low < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {low_high}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value}")


@dataclass
class IntensityAugConfig:
    """vox2vec's global intensity augmentations, one independent draw per view.

    ``units: hu`` means the noise and window numbers are Hounsfield units, converted through the
    CT preprocessing window (``preprocess.ct.window_hu``) onto the cached [0, 1] scale; ``units:
    scaled`` means they are already on the [0, 1] scale (MRI).
    """

    enabled: bool = True
    units: Literal["hu", "scaled"] = "hu"
    blur_or_sharpen_prob: float = 0.5  # one of the two, each half of the time
    blur_sigma: tuple[float, float] = (0.25, 1.5)  # voxels
    sharpen_sigma1: tuple[float, float] = (0.5, 1.0)  # voxels, the first (blurring) Gaussian
    sharpen_sigma2: float = 0.5  # voxels, the second Gaussian
    sharpen_alpha: tuple[float, float] = (10.0, 30.0)
    # spatial axes (0 = x, 1 = y, 2 = z) the blur and sharpening filter along: vox2vec filters in
    # the axial plane only ([0, 1]); [0, 1, 2] filters in 3D
    blur_axes: list[int] = field(default_factory=lambda: [0, 1])
    noise_prob: float = 0.5
    noise_std: tuple[float, float] = (0.0, 30.0)  # HU (or scaled units)
    window_prob: float = 0.8
    window_low: tuple[float, float] = (-1350.0, -1000.0)  # HU (or scaled units)
    window_high: tuple[float, float] = (300.0, 1000.0)

    def __post_init__(self) -> None:
        for name in ("blur_or_sharpen_prob", "noise_prob", "window_prob"):
            _check_probability(f"intensity.{name}", getattr(self, name))
        _check_range("intensity.blur_sigma", self.blur_sigma, 0.0)
        _check_range("intensity.sharpen_sigma1", self.sharpen_sigma1, 0.0)
        _check_range("intensity.sharpen_alpha", self.sharpen_alpha)
        _check_range("intensity.noise_std", self.noise_std, 0.0)
        _check_range("intensity.window_low", self.window_low)
        _check_range("intensity.window_high", self.window_high)
        if not self.blur_axes or any(a not in (0, 1, 2) for a in self.blur_axes):
            raise ValueError(
                f"intensity.blur_axes must list spatial axes 0, 1, 2, got {self.blur_axes}"
            )
        if len(set(self.blur_axes)) != len(self.blur_axes):
            raise ValueError(f"intensity.blur_axes lists an axis twice: {self.blur_axes}")
        if self.window_low[1] >= self.window_high[0]:
            raise ValueError(
                f"intensity.window_low {self.window_low} must lie below intensity.window_high {self.window_high}"
            )


@dataclass
class LocalAugConfig:
    """The seed paper's local augmentations (Models Genesis style), one draw per view, applied in
    the order of the authors' code (hierarchical-dense-ssl ``AppearanceTransform.rand_aug``): local
    pixel shuffling, then the Bezier curve, then in-painting. Defaults reproduce that code:

    * shuffling: ``shuffle_blocks`` blocks of side ``floor(patch side * fraction)`` (dim // 20),
      origins uniform in ``[0, side - block)``; ``shuffle_permutation: shared`` permutes the voxels
      of every block with ONE permutation (the authors' vectorised code), ``per_block`` draws one
      per block (the original Models Genesis loop);
    * Bezier: end points (0, 0) and (1, 1), two inner points U(0, 1)^2, curve x and y sorted
      independently (monotone, never inverted); ``nonlinear_invert_prob`` > 0 inverts it with that
      probability (Models Genesis: 0.5);
    * in-painting: while fewer than ``inpaint_max_boxes`` boxes and U(0, 1) < ``inpaint_continue_prob``
      (so no box at all with probability 1 - 0.95), a box of side
      ``randint(floor(lo * n), floor(hi * n))`` at ``randint(margin, n - side - margin)`` filled
      with U(0, 1) noise.
    """

    enabled: bool = True
    shuffle_prob: float = 0.8
    shuffle_blocks: int = 5000  # number of small blocks whose voxels are permuted
    shuffle_block_fraction: float = 0.05  # block side = floor(patch side * fraction) (dim // 20)
    shuffle_permutation: Literal["shared", "per_block"] = "shared"
    nonlinear_prob: float = 0.9  # Bezier intensity curve
    nonlinear_invert_prob: float = 0.0  # the authors' code never inverts (Models Genesis: 0.5)
    inpaint_prob: float = 1.0  # the authors' code always runs the in-painting loop
    inpaint_max_boxes: int = 30
    inpaint_continue_prob: float = 0.95  # checked before every box, the first one included
    inpaint_size_fraction: tuple[float, float] = (0.1, 0.2)  # box side = randint(lo*n, hi*n)
    inpaint_margin: int = 3  # boxes start at least this far from the patch border

    def __post_init__(self) -> None:
        for name in (
            "shuffle_prob",
            "nonlinear_prob",
            "nonlinear_invert_prob",
            "inpaint_prob",
            "inpaint_continue_prob",
        ):
            _check_probability(f"local.{name}", getattr(self, name))
        if self.shuffle_blocks < 0 or self.inpaint_max_boxes < 0 or self.inpaint_margin < 0:
            raise ValueError(
                "local.shuffle_blocks, local.inpaint_max_boxes and local.inpaint_margin must be >= 0"
            )
        if self.shuffle_permutation not in ("shared", "per_block"):
            raise ValueError(
                f"local.shuffle_permutation must be shared or per_block, got {self.shuffle_permutation!r}"
            )
        if not 0.0 < self.shuffle_block_fraction <= 1.0:
            raise ValueError(
                f"local.shuffle_block_fraction must be in (0, 1], got {self.shuffle_block_fraction}"
            )
        _check_range("local.inpaint_size_fraction", self.inpaint_size_fraction, 0.0)
        if self.inpaint_size_fraction[1] > 1.0:
            raise ValueError(
                f"local.inpaint_size_fraction must be <= 1, got {self.inpaint_size_fraction}"
            )


@dataclass
class EquivarianceConfig:
    """Pix2Rep-style equivariance: a random grid-exact spatial transform T is applied to view 2's
    image; its embeddings at T(p) must match view 1's at p. ``weight: 0`` switches the term (and
    the transform) off.

    ``projector: shared`` contrasts the embeddings after the InfoNCE projector, as Pix2Rep
    contrasts projected features; ``none`` contrasts the raw voxel embeddings, which pushes the
    embedding itself towards per-voxel identity codes (measured: a linear probe on phantoms fell
    below random init, docs/pretraining.md).
    """

    weight: float = 0.0
    temperature: float = 0.1
    projector: Literal["shared", "none"] = "shared"
    flip_prob: float = 0.5  # per axis (x, y, z)
    rotation_turns: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3]
    )  # axial quarter turns, uniform
    zoom_prob: float = 0.0  # integer zoom-in + crop (exact on the grid) by one of ``zoom_factors``
    zoom_factors: list[int] = field(default_factory=lambda: [2])

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"equivariance.weight must be >= 0, got {self.weight}")
        if self.temperature <= 0:
            raise ValueError(f"equivariance.temperature must be > 0, got {self.temperature}")
        if not self.rotation_turns or any(not 0 <= t <= 3 for t in self.rotation_turns):
            raise ValueError(
                f"equivariance.rotation_turns must list quarter turns in 0..3, got {self.rotation_turns}"
            )
        for name in ("flip_prob", "zoom_prob"):
            _check_probability(f"equivariance.{name}", getattr(self, name))
        if any(f < 1 for f in self.zoom_factors):
            raise ValueError(
                f"equivariance.zoom_factors must be integers >= 1, got {self.zoom_factors}"
            )

    @property
    def enabled(self) -> bool:
        return self.weight > 0


@dataclass
class OnlineProbeConfig:
    """vox2vec-style online linear probe: every ``every`` steps a fresh linear head
    (``FPNLinearHead``) is trained for ``steps`` steps on a frozen copy of the current backbone,
    on ``train_cases`` labelled cached cases, and its Dice on ``val_cases`` other cases is logged
    (``online_probe/dice_mean``, ``online_probe/dice/<organ>``). Rank 0 only; it never touches
    the training model or its random streams. ``every: 0`` switches it off.

    The cases are the first ``train_cases`` + ``val_cases`` of a permutation of the labelled
    cases of ``source`` (all labelled sources when empty) seeded by the recipe's seed, fixed for
    the whole run so the curve compares like with like.
    """

    every: int = 0  # steps between probes; 0 = off
    source: str = ""  # cache source with labels; "" = every labelled case
    classes: list[str] = field(
        default_factory=lambda: ["liver", "spleen", "right_kidney", "left_kidney"]
    )
    train_cases: int = 4
    val_cases: int = 2
    steps: int = 200  # head training steps per probe
    lr: float = 3e-3  # higher than the downstream probe's 3e-4: a few hundred steps only
    batch_size: int = 2
    patch_size: tuple[int, int, int] = (128, 128, 32)
    foreground_fraction: float = 0.5
    loss: Literal["bce", "ce"] = "bce"
    dice_weight: float = 1.0
    sw_overlap: float = 0.5  # sliding-window inference on the validation cases
    sw_batch_size: int = 2
    threshold: float = 0.5
    # the downstream probe's options (docs/downstream.md): standardised embedding, cached features
    feature_norm: Literal["none", "batch"] = "batch"
    feature_cache: bool | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"online_probe.every must be >= 0 (0 = off), got {self.every}")
        for name in ("train_cases", "val_cases", "steps", "batch_size", "sw_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"online_probe.{name} must be >= 1, got {getattr(self, name)}")
        try:  # the downstream schema checks classes, patch size, fractions and rates
            self.probe_config()
        except ValueError as err:
            raise ValueError(str(err)) from None

    @property
    def enabled(self) -> bool:
        return self.every > 0

    def probe_config(self, device: Literal["auto", "cpu", "cuda"] = "auto") -> ProbeConfig:
        """The equivalent downstream ``ProbeConfig`` (linear head, no outputs written)."""
        x, y, z = self.patch_size

        return ProbeConfig(
            classes=list(self.classes),
            source=self.source or None,
            head=HeadConfig(kind="linear", feature_norm=self.feature_norm),
            feature_cache=self.feature_cache,
            patch_size=(x, y, z),
            batch_size=self.batch_size,
            steps=self.steps,
            lr=self.lr,
            foreground_fraction=self.foreground_fraction,
            loss=self.loss,
            dice_weight=self.dice_weight,
            device=device,
            log_every=self.steps,
            tensorboard=False,
            sw_overlap=self.sw_overlap,
            sw_batch_size=self.sw_batch_size,
            threshold=self.threshold,
            hd95=False,
            write_predictions=False,
            overlay_slices=0,
        )


@dataclass
class PretrainConfig:
    steps: int = 50_000
    pairs_per_step: int = 10
    patch_size: tuple[int, int, int] = (128, 128, 32)  # (x, y, z) voxels
    positives_per_pair: int = 1024
    min_overlap: int = 1  # positives a pair must have; pairs with fewer are redrawn
    pairs_per_volume: int = 10  # consecutive pairs drawn from one volume (vox2vec: all 10)
    sources: list[str] = field(default_factory=list)  # cache sources to use; empty = all
    lr: float = 3e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    warmup_steps: int = 0  # linear warm-up, then constant (the papers use a constant lr)
    infonce_weight: float = 1.0
    infonce_temperature: float = 0.1
    reconstruction_weight: float = 10.0  # 0 = vox2vec (no restorative term)
    intensity: IntensityAugConfig = field(default_factory=IntensityAugConfig)
    local: LocalAugConfig = field(default_factory=LocalAugConfig)
    equivariance: EquivarianceConfig = field(default_factory=EquivarianceConfig)
    num_workers: int = 4  # DataLoader processes per rank; 0 = in the main process
    prefetch_factor: int = 2
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2  # older step checkpoints are deleted; the final one is always kept
    log_every: int = 50
    image_every: int = 1000
    amp: Literal["auto", "bf16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    device: Literal["auto", "cpu", "cuda"] = "auto"
    gather_negatives_across_ranks: bool = False
    deterministic: bool = False  # torch.use_deterministic_algorithms (slower on GPU)
    # torch.compile the model (the first step compiles: minutes; for long GPU runs). Same losses
    # and gradients up to float rounding (tests/train/test_fast_step.py).
    compile: bool = False
    cpu_threads: int = (
        0  # torch intra-op threads of the training process on CPU; 0 = torch's default
    )
    online_probe: OnlineProbeConfig = field(default_factory=OnlineProbeConfig)  # off by default

    def __post_init__(self) -> None:
        positive = (
            "steps",
            "pairs_per_step",
            "positives_per_pair",
            "pairs_per_volume",
            "checkpoint_every",
            "log_every",
            "image_every",
            "prefetch_factor",
            "min_overlap",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(p < 1 for p in self.patch_size):
            raise ValueError(f"patch_size must be positive, got {self.patch_size}")
        if self.cpu_threads < 0:
            raise ValueError(f"cpu_threads must be >= 0, got {self.cpu_threads}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.lr <= 0 or self.infonce_temperature <= 0:
            raise ValueError("lr and infonce_temperature must be > 0")
        if (
            min(self.infonce_weight, self.reconstruction_weight, self.grad_clip, self.weight_decay)
            < 0
        ):
            raise ValueError("loss weights, grad_clip and weight_decay must be >= 0")
        if (
            self.infonce_weight == 0
            and self.reconstruction_weight == 0
            and not self.equivariance.enabled
        ):
            raise ValueError("every loss weight is 0: nothing to train")
