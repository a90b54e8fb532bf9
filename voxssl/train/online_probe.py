"""The online linear probe of a pretraining run (vox2vec's way to watch the representation).

Every ``pretrain.online_probe.every`` steps, rank 0 trains a fresh ``FPNLinearHead`` on a frozen
copy of the *current* backbone (eval mode, no gradient; the training model is never touched) on a
few labelled cached cases, then scores Dice on other labelled cases with sliding-window inference
on the cached grid. It reuses the downstream machinery: :func:`voxssl.eval.sampling.labelled_volume`,
:func:`voxssl.eval.protocol.training_sampler` (cached whole-volume features when they fit), :class:`~voxssl.models.segmentation.SegmentationModel`,
:func:`voxssl.eval.train.train_segmentation` and :func:`voxssl.eval.protocol.evaluate_case`.

Randomness: the patch sampler has its own numpy Generator and the head's initialisation runs
inside ``torch.random.fork_rng``, both seeded from (recipe seed, step), so a probe neither reads
nor advances the random streams of pretraining: exact resume holds with or without it.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from voxssl.config.pretrain import OnlineProbeConfig
from voxssl.data.cache import open_cache
from voxssl.errors import ConfigError, DataError
from voxssl.eval.protocol import check_classes, evaluate_case, training_sampler
from voxssl.eval.sampling import LabelledVolume, labelled_volume
from voxssl.eval.train import train_segmentation
from voxssl.models.fpn import FPN
from voxssl.models.segmentation import SegmentationModel, output_channels
from voxssl.models.segmentation_heads import build_head
from voxssl.vocabulary import organ_name

log = logging.getLogger(__name__)

SECTION = "pretrain.online_probe"
TAG = "online_probe"


class OnlineProbe:
    """Holds the probe's cases (loaded once) and runs one probe per call of :meth:`run`."""

    def __init__(
        self,
        cfg: OnlineProbeConfig,
        cache_dir,
        *,
        modality: str,
        channels: int,
        seed: int,
        device: torch.device,
        where: str = "recipe",
    ) -> None:

        self.cfg = cfg
        self.seed = seed
        self.device = device
        self.downstream = cfg.probe_config(device="cuda" if device.type == "cuda" else "cpu")
        self.class_ids = self.downstream.class_ids()
        try:
            cases = open_cache(cache_dir).cases(source=cfg.source or None, labelled=True)
        except DataError as err:
            raise ConfigError(f"{where}: {SECTION}.source: {err}") from None
        cases = [c for c in cases if c.modality == modality and c.num_channels == channels]
        needed = cfg.train_cases + cfg.val_cases
        if len(cases) < needed:
            raise ConfigError(
                f"{where}: {SECTION} needs train_cases + val_cases = {needed} labelled {modality} cases "
                f"(source {cfg.source or 'any'}), the cache {cache_dir} has {len(cases)}"
            )
        order = np.random.default_rng(seed).permutation(len(cases))
        chosen = [cases[i] for i in order[:needed]]
        self.train_cases, self.val_cases = chosen[: cfg.train_cases], chosen[cfg.train_cases :]
        check_classes(self.train_cases, self.class_ids, where, SECTION)
        # loaded at the first probe: (label remapping, organ voxel indices)
        self._volumes: list[LabelledVolume] | None = None

    def due(self, step: int) -> bool:
        return self.cfg.every > 0 and step % self.cfg.every == 0

    def run(self, backbone: FPN, step: int) -> dict[str, float]:
        """Train a head on a frozen copy of ``backbone`` and return TensorBoard scalars."""
        started = time.perf_counter()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(np.random.SeedSequence([self.seed, step]).generate_state(1)[0]))
            model = self._model(backbone)
            rng = np.random.default_rng([self.seed, step, 1])
            self._train(model, rng, step)
            scores = self._evaluate(model)
        del model
        scores[f"{TAG}/seconds"] = time.perf_counter() - started
        log.info(
            "online probe at step %d: mean Dice %.1f %% (%.1f s)",
            step,
            100 * scores.get(f"{TAG}/dice_mean", float("nan")),
            scores[f"{TAG}/seconds"],
        )
        return scores

    def _model(self, backbone: FPN) -> SegmentationModel:

        frozen = copy.deepcopy(
            backbone
        )  # SegmentationModel freezes its backbone's parameters in place
        for parameter in frozen.parameters():
            parameter.grad = None
        in_channels = list(frozen.level_channels)
        head = build_head(
            "linear",
            in_channels,
            output_channels(self.cfg.loss, len(self.class_ids)),
            feature_norm=self.cfg.feature_norm,
        )
        return SegmentationModel(frozen, head, loss_kind=self.cfg.loss).to(self.device)

    def _train(self, model, rng: np.random.Generator, step: int) -> None:

        if self._volumes is None:
            volume_rng = np.random.default_rng([self.seed, 0])
            self._volumes = [
                labelled_volume(
                    c.case_id,
                    c.image(),
                    c.label(),
                    c.body_mask(),
                    self.class_ids,
                    c.annotated,
                    volume_rng,
                )
                for c in self.train_cases
            ]
        sampler = training_sampler(
            model.backbone, self._volumes, self.downstream, rng, self.device, where=SECTION
        )
        train_segmentation(
            model, sampler, self.downstream, self.device, description=f"online probe @{step}"
        )

    def _evaluate(self, model) -> dict[str, float]:

        scores = [
            evaluate_case(model, case, self.downstream, self.class_ids, self.device)[0]
            for case in self.val_cases
        ]
        return dice_scalars(scores, self.class_ids, organ_name)


def dice_scalars(scores: Sequence, class_ids: Sequence[int], name_of) -> dict[str, float]:
    """``online_probe/dice_mean`` (mean over cases of each case's mean Dice) and
    ``online_probe/dice/<organ>`` (mean over the cases that score it); unscored values are left out."""
    out: dict[str, float] = {}
    case_means = [s.mean_dice() for s in scores if np.isfinite(s.mean_dice())]
    if case_means:
        out[f"{TAG}/dice_mean"] = float(np.mean(case_means))
    for organ in class_ids:
        values = [s.dice[organ] for s in scores if np.isfinite(s.dice[organ])]
        if values:
            out[f"{TAG}/dice/{name_of(organ)}"] = float(np.mean(values))
    return out


def build_online_probe(
    recipe,
    cfg: OnlineProbeConfig,
    *,
    modality: str,
    channels: int,
    device: torch.device,
    is_main: bool,
) -> OnlineProbe | None:
    """The probe of rank 0 when ``cfg.every > 0``; None otherwise (other ranks never probe)."""
    if not cfg.enabled or not is_main:
        return None
    return OnlineProbe(
        cfg,
        recipe.data.cache_dir,
        modality=modality,
        channels=channels,
        seed=recipe.seed,
        device=device,
        where=str(recipe.source_file),
    )


__all__ = ["OnlineProbe", "build_online_probe", "dice_scalars"]
