"""The downstream protocol: folds x low-data subsets -> train a head (and backbone) -> score.

``run_downstream`` is what ``voxssl linear-probe`` and ``voxssl fine-tune`` call. Per fold it starts
from the same initial backbone, trains, predicts every test case with a sliding window, scores Dice
(and HD95) in the cached (resampled) space as vox2vec does, writes a PNG overlay and the prediction
in the original geometry of the scan, and saves the trained model (``model.safetensors``, usable by
``voxssl predict``). Run folder layout::

    run_dir/recipe.resolved.yaml   run_dir/splits.json
    run_dir/results.{json,csv,md}  run_dir/<fold>/{model.safetensors,history.json}
    run_dir/<fold>/predictions/<case>.nii.gz   run_dir/<fold>/overlays/<case>.png
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from voxssl.config.downstream import DownstreamConfig, FinetuneConfig, ProbeConfig
from voxssl.config.model import ModelConfig, model_config_to_dict
from voxssl.config.recipe import Recipe, recipe_to_dict, save_resolved
from voxssl.data.cache import open_cache
from voxssl.device import resolve_device
from voxssl.errors import CheckpointError, ConfigError, DataError
from voxssl.eval.feature_cache import (
    CachedPatchSampler,
    cache_features,
    check_patch_alignment,
    decide_feature_cache,
)
from voxssl.eval.folds import Fold, Splits, load_splits, low_data_subset, make_splits, save_splits
from voxssl.eval.inference import (
    label_in_original_geometry,
    predict_probabilities,
    restrict_to_body,
    write_label_nifti,
)
from voxssl.eval.metrics import CaseScores, score_case
from voxssl.eval.overlay import write_overlay
from voxssl.eval.report import summarize, write_report
from voxssl.eval.run_results import (
    RunMode,
    check_run_folder,
    check_same_run,
    clear_run_folder,
    finished_folds,
    run_fingerprint,
    write_fold_scores,
    write_run_file,
)
from voxssl.eval.sampling import PatchSampler, labelled_volume
from voxssl.eval.train import BackboneSchedule, train_segmentation
from voxssl.hub.channels import AdaptChannels
from voxssl.hub.resolve import resolve_weights
from voxssl.models.build import build_backbone
from voxssl.models.features import pyramid_channels
from voxssl.models.plan import Plan, preprocessing_plan
from voxssl.models.segmentation import SegmentationModel, output_channels, probabilities_to_label
from voxssl.models.segmentation_heads import build_head
from voxssl.models.segmentation_weights import SegmentationSpec, save_segmentation_weights
from voxssl.models.weights import load_backbone, read_plan
from voxssl.utils.atomic import atomic_write_text
from voxssl.vocabulary import IGNORE_INDEX, ORGANS, organ_name

log = logging.getLogger(__name__)

Protocol = Literal["linear-probe", "fine-tune"]

#: ``--weights random``: the recipe's architecture, randomly initialised (the baseline).
RANDOM_INIT = "random"


@dataclass
class InitialBackbone:
    """The backbone every fold starts from, and the plan to save with the trained models."""

    backbone: nn.Module
    plan: Any  # voxssl.models.plan.Plan
    description: str


def initial_backbone(
    recipe: Recipe,
    weights: str,
    modality: str,
    in_channels: int,
    seed: int,
    adapt_channels: AdaptChannels = "refuse",
    from_scratch: bool = False,
) -> InitialBackbone:
    """Load pretrained weights (checked against the data and the recipe), or build a random one.

    With ``from_scratch`` the backbone is randomly initialised; its architecture is the recipe's
    ``model`` section, else that of ``weights`` when given (the from-scratch baseline of exactly
    that pretrained model), else the default preset.
    """

    preprocessing = preprocessing_plan(modality, recipe.preprocess, in_channels)
    if weights == RANDOM_INIT or from_scratch:
        config = _random_init_architecture(recipe, weights, in_channels, adapt_channels)
        if config.in_channels != in_channels:
            raise ConfigError(
                f"{recipe.source_file}: model.in_channels is {config.in_channels}, the images have {in_channels}"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = build_backbone(config)
        plan = Plan.for_model(
            config, preprocessing, recipe_to_dict(recipe), extra={"init": "random", "seed": seed}
        )
        shape = (
            f", the architecture of {weights}"
            if weights != RANDOM_INIT and recipe.model is None
            else ""
        )
        return InitialBackbone(backbone, plan, f"random init ({config.preset}, seed {seed}{shape})")

    path = resolve_weights(weights, in_channels=in_channels, adapt_channels=adapt_channels)
    expect: dict[str, Any] = {"architecture.in_channels": in_channels}
    if recipe.model is not None:  # the recipe names an architecture: the weights must be that one
        expect["architecture"] = model_config_to_dict(recipe.model)
    backbone, plan = load_backbone(path, expect=expect)
    planned = plan.preprocessing.get("modality")
    if planned and planned != modality:
        raise CheckpointError(
            f"{path}: the weights were trained on {planned} images, the recipe's cases are {modality}"
        )
    planned_spacing = plan.preprocessing.get("spacing")
    if planned_spacing and not np.allclose(planned_spacing, preprocessing["spacing"], rtol=1e-4):
        log.warning(
            "%s was pretrained at spacing %s mm, the data are at %s mm",
            path,
            planned_spacing,
            preprocessing["spacing"],
        )
    plan = Plan(
        architecture=plan.architecture,
        preprocessing=preprocessing,
        recipe=recipe_to_dict(recipe),
        kind="backbone",
        extra={**plan.extra, "init": str(path)},
    )
    return InitialBackbone(backbone, plan, str(path))


def _random_init_architecture(
    recipe: Recipe, weights: str, in_channels: int, adapt_channels: AdaptChannels
) -> ModelConfig:
    """The recipe's ``model``, else the architecture of ``weights`` (unless 'random'), else the default."""

    if recipe.model is not None:
        return recipe.model
    if weights != RANDOM_INIT:  # only the plan is read: the tensors are not needed
        path = resolve_weights(weights, in_channels=in_channels, adapt_channels=adapt_channels)
        return read_plan(path).model_config(source=str(path))
    return ModelConfig(in_channels=in_channels)


def _labelled_cases(recipe: Recipe, cfg: DownstreamConfig) -> list:

    cases = open_cache(recipe.data.cache_dir).cases(source=cfg.source, labelled=True)
    if not cases:
        raise DataError(
            f"cache {recipe.data.cache_dir} has no labelled case (source {cfg.source or 'any'})"
        )
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise ConfigError(
            f"{recipe.source_file}: case ids repeat across sources; set probe.source to one source"
        )
    modalities = {c.modality for c in cases}
    if len(modalities) != 1:
        raise ConfigError(
            f"{recipe.source_file}: labelled cases mix modalities {sorted(modalities)}; set 'source'"
        )
    return cases


def check_classes(cases: list, class_ids: list[int], source: str, section: str) -> None:
    """Every recipe class must be annotated somewhere; unknown label ids are reported."""

    present: set[int] = set()
    for case in cases:
        ids = case.meta.get("label_classes")
        if ids is None:
            ids = np.unique(case.label()).tolist()
        unknown = [i for i in ids if i not in ORGANS and i not in (0, IGNORE_INDEX)]
        if unknown:
            raise DataError(
                f"case {case.key}: label ids {unknown} are outside the canonical vocabulary"
            )
        present.update(int(i) for i in ids)
    absent = [c for c in class_ids if c not in present]
    if absent:
        names = ", ".join(f"{organ_name(c)} ({c})" for c in absent)
        raise ConfigError(
            f"{source}: {section}.classes lists {names}, annotated in none of the {len(cases)} labelled cases"
        )


def warn_unlabelled_classes(fold_name: str, train_cases: list, class_ids: list[int]) -> list[int]:
    """Warn about the classes that no training case of a fold labels (the head never sees one)."""
    present: set[int] = set()
    for case in train_cases:
        ids = case.meta.get("label_classes")
        present.update(int(i) for i in (ids if ids is not None else np.unique(case.label())))
    missing = [c for c in class_ids if c not in present]
    if missing:
        names = ", ".join(f"{organ_name(c)} ({c})" for c in missing)
        log.warning(
            "%s: no training case has a labelled voxel of %s (%d training case(s)); the head "
            "cannot learn it, so its Dice in this fold is 0 or undefined",
            fold_name,
            names,
            len(train_cases),
        )
    return missing


def build_splits(cfg: DownstreamConfig, case_ids: list[str], run_dir: Path | None = None) -> Splits:
    """The recipe's folds (``cv.split_file``, or made from the case ids); a resumed run reuses the
    ``splits.json`` of ``run_dir``. Nothing is written here."""
    cv = cfg.cv
    if run_dir is not None and (run_dir / "splits.json").is_file():
        return load_splits(run_dir / "splits.json", case_ids)
    if cv.split_file is not None:
        return load_splits(cv.split_file, case_ids)
    return make_splits(
        case_ids,
        cv.scheme,
        k=cv.k,
        seed=cv.seed,
        val_fraction=cv.val_fraction,
        test_cases=cv.test_cases,
    )


def selected_folds(cfg: DownstreamConfig, splits: Splits) -> list[Fold]:
    folds = [f for f in splits.folds if cfg.cv.folds is None or f.index in cfg.cv.folds]
    if not folds:
        raise ConfigError(
            f"cv.folds {cfg.cv.folds} selects none of folds 0..{len(splits.folds) - 1}"
        )
    return [low_data_subset(f, n, cfg.cv.seed) for f in folds for n in cfg.cv.n_train]


def run_downstream(
    recipe: Recipe,
    cfg: DownstreamConfig,
    weights: str,
    protocol: Protocol,
    progress: bool = True,
    mode: RunMode = "new",
) -> dict[str, Any]:
    """Run a protocol over every selected fold; returns the summary written to results.json.

    Everything is checked (cases, classes, folds, weights, the run folder) before the run folder
    is created or changed. ``mode`` (see :mod:`voxssl.eval.run_results`): ``new`` refuses a folder
    that holds an earlier run's results, ``overwrite`` replaces them, ``resume`` keeps the folds that
    finished and runs the others.
    """

    run_dir = recipe.run_dir
    section = "probe" if protocol == "linear-probe" else "finetune"
    class_ids = cfg.class_ids()
    cases = _labelled_cases(recipe, cfg)
    check_classes(cases, class_ids, recipe.source_file, section)
    check_run_folder(run_dir, mode)
    by_id = {c.case_id: c for c in cases}
    splits = build_splits(cfg, sorted(by_id), run_dir if mode == "resume" else None)
    folds = selected_folds(cfg, splits)
    device = resolve_device(cfg.device, f"{section}.device")
    if device.type == "cpu" and cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    in_channels = cases[0].num_channels
    from_scratch = isinstance(cfg, FinetuneConfig) and cfg.from_scratch
    init = initial_backbone(
        recipe,
        weights,
        cases[0].modality,
        in_channels,
        recipe.seed,
        cfg.adapt_channels,
        from_scratch=from_scratch,
    )
    fingerprint = run_fingerprint(recipe_to_dict(recipe), section, protocol, init.description)
    finished: dict[str, list[CaseScores]] = {}
    if mode == "resume":
        check_same_run(run_dir, fingerprint)
        finished = finished_folds(run_dir)
    elif mode == "overwrite":
        clear_run_folder(run_dir)

    # --- everything checked: only now is the run folder written --------------------------------
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(recipe, run_dir)
    save_splits(splits, run_dir / "splits.json")
    write_run_file(run_dir, fingerprint)
    log.info(
        "%s on %d labelled cases, %s, backbone: %s, device %s",
        protocol,
        len(cases),
        splits.scheme,
        init.description,
        device,
    )
    results: dict[str, list[CaseScores]] = {}
    for fold in folds:
        fold_dir = run_dir / fold.name
        if fold.name in finished:
            results[fold.name] = finished.pop(fold.name)
            log.info("%s: finished in the earlier run, kept (%s)", fold.name, fold_dir)
            continue
        if fold_dir.exists():  # an interrupted fold starts again from its beginning
            shutil.rmtree(fold_dir)
        results[fold.name] = run_fold(
            recipe,
            cfg,
            protocol,
            fold,
            by_id,
            init,
            class_ids,
            device,
            fold_dir,
            progress=progress,
        )
        write_fold_scores(fold_dir, results[fold.name])
        log.info(
            "%s: mean Dice %.1f %%",
            fold.name,
            100 * np.nanmean([s.mean_dice() for s in results[fold.name]]),
        )
    results.update(finished)  # folds finished earlier that this run did not select
    results = {name: results[name] for name in sorted(results, key=_fold_order)}
    extra = {
        "protocol": protocol,
        "weights": init.description,
        "from_scratch": from_scratch,
        "scheme": splits.scheme,
        "steps": cfg.steps,
        "head": cfg.head.kind,
    }
    write_report(run_dir, results, class_ids, title=f"{protocol}: {recipe.name}", extra=extra)
    return summarize(results, class_ids)


def _fold_order(name: str) -> tuple[int, int]:
    index, _, n_train = name.removeprefix("fold").partition("_n")
    return int(index), int(n_train or 0)


def run_fold(
    recipe: Recipe,
    cfg: DownstreamConfig,
    protocol: Protocol,
    fold: Fold,
    by_id: dict,
    init: InitialBackbone,
    class_ids: list[int],
    device: torch.device,
    fold_dir: Path,
    progress: bool = True,
) -> list[CaseScores]:
    """Train on ``fold.train``, save the model, score and write every ``fold.test`` case."""

    warn_unlabelled_classes(fold.name, [by_id[i] for i in fold.train], class_ids)
    seed_sequence = [recipe.seed, fold.index, 0 if fold.n_train == "all" else int(fold.n_train)]
    rng = np.random.default_rng(seed_sequence)
    volumes = [
        labelled_volume(c.case_id, c.image(), c.label(), c.body_mask(), class_ids, c.annotated, rng)
        for c in (by_id[i] for i in fold.train)
    ]
    backbone = copy.deepcopy(init.backbone)
    in_channels = pyramid_channels(backbone, cfg.head.features)
    sampler = training_sampler(
        backbone, volumes, cfg, rng, device, where=f"{recipe.source_file} ({fold.name})"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence(seed_sequence).generate_state(1)[0]))
        head = build_head(
            cfg.head.kind,
            in_channels,
            output_channels(cfg.loss, len(class_ids)),
            cfg.head.hidden_channels,
            cfg.head.blocks_per_level,
            cfg.head.feature_norm,
        )
    model = SegmentationModel(backbone, head, loss_kind=cfg.loss, features=cfg.head.features)
    schedule = BackboneSchedule.from_config(cfg) if isinstance(cfg, FinetuneConfig) else None

    def validate(step: int) -> dict[str, float]:
        scores = [evaluate_case(model, by_id[i], cfg, class_ids, device)[0] for i in fold.val]
        return {"mean_dice": float(np.nanmean([s.mean_dice() for s in scores]))}

    history = train_segmentation(
        model,
        sampler,
        cfg,
        device,
        schedule=schedule,
        description=f"{protocol} {fold.name}",
        tensorboard_dir=fold_dir / "tensorboard",
        validate=validate if fold.val else None,
        val_every=cfg.val_every,
        progress=progress,
    )
    atomic_write_text(fold_dir / "history.json", json.dumps(history, indent=1) + "\n")
    spec = segmentation_spec(cfg, class_ids, in_channels)
    save_segmentation_weights(fold_dir / "model.safetensors", model.cpu(), spec, init.plan)
    model.to(device)
    return [
        write_case_outputs(model, by_id[i], cfg, class_ids, device, fold_dir) for i in fold.test
    ]


def training_sampler(
    backbone: nn.Module,
    volumes: list,
    cfg: DownstreamConfig,
    rng: np.random.Generator,
    device: torch.device,
    where: str,
):
    """Patches of the image, or of the frozen backbone's cached pyramid (probe ``feature_cache``)."""

    level_channels = pyramid_channels(backbone, cfg.head.features)
    if isinstance(cfg, ProbeConfig) and cfg.feature_cache is not False:
        try:
            check_patch_alignment(cfg.patch_size, len(level_channels), f"{where}: probe.patch_size")
        except ConfigError as err:
            if cfg.feature_cache is True:
                raise
            log.warning("feature cache off: %s", err)
            return PatchSampler(volumes, cfg.patch_size, cfg.foreground_fraction, rng)
        if decide_feature_cache(
            cfg.feature_cache, volumes, level_channels, cfg.feature_cache_max_gib, where
        ):
            cached = cache_features(
                backbone.to(device), volumes, device, cfg.amp, features=cfg.head.features
            )
            return CachedPatchSampler(cached, cfg.patch_size, cfg.foreground_fraction, rng)
    return PatchSampler(volumes, cfg.patch_size, cfg.foreground_fraction, rng)


def segmentation_spec(cfg: DownstreamConfig, class_ids: list[int], in_channels: list[int]):

    return SegmentationSpec(
        classes=list(class_ids),
        head_kind=cfg.head.kind,
        head_in_channels=list(in_channels),
        head_hidden=cfg.head.hidden_channels,
        head_blocks_per_level=cfg.head.blocks_per_level,
        loss=cfg.loss,
        threshold=cfg.threshold,
        sw_roi_size=list(cfg.inference_roi),
        sw_overlap=cfg.sw_overlap,
        sw_mode=cfg.sw_mode,
        body_restricted=cfg.body_restricted_loss,
        head_feature_norm=cfg.head.feature_norm,
        features=cfg.head.features,
    )


def evaluate_case(
    model, case, cfg: DownstreamConfig, class_ids: list[int], device
) -> tuple[CaseScores, torch.Tensor, np.ndarray]:
    """Scores, probabilities and label of one cached case, on the cached grid."""

    probs = predict_probabilities(
        model,
        np.asarray(case.image(), dtype=np.float32),
        cfg.inference_roi,
        cfg.sw_overlap,
        cfg.sw_mode,
        cfg.sw_batch_size,
        device,
        cfg.amp,
    )
    if cfg.body_restricted_loss:
        probs = restrict_to_body(probs, case.body_mask(), cfg.loss)
    label = probabilities_to_label(probs, class_ids, cfg.loss, cfg.threshold)
    scores = score_case(
        case.case_id,
        label,
        np.asarray(case.label()),
        class_ids,
        spacing=case.spacing,
        annotated=case.annotated,
        hd95=cfg.hd95,
    )
    return scores, probs, label


def write_case_outputs(
    model, case, cfg: DownstreamConfig, class_ids: list[int], device, fold_dir: Path
) -> CaseScores:

    scores, probs, label = evaluate_case(model, case, cfg, class_ids, device)
    if cfg.overlay_slices > 0:
        write_overlay(
            fold_dir / "overlays" / f"{case.case_id}.png",
            np.asarray(case.image()),
            label,
            np.asarray(case.label()),
            cfg.overlay_slices,
        )
    if cfg.write_predictions:
        original, affine = label_in_original_geometry(
            probs, case.meta, class_ids, cfg.loss, cfg.threshold
        )
        write_label_nifti(fold_dir / "predictions" / f"{case.case_id}.nii.gz", original, affine)
    log.info("%s: mean Dice %.1f %%", case.case_id, 100 * scores.mean_dice())
    return scores


__all__ = [
    "RANDOM_INIT",
    "check_classes",
    "evaluate_case",
    "initial_backbone",
    "run_downstream",
    "run_fold",
    "training_sampler",
    "warn_unlabelled_classes",
]
