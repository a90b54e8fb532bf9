"""``voxssl classify train | eval``: k-fold classification with a DINOv2 ViT and its AUC report.

``run_classify`` (train): the labelled images of the recipe, k folds (by case for cache slices,
stratified by class for folders; a validation part held out of each training part), per fold a
fresh copy of the ``--weights`` encoder with a new head trained (:mod:`voxssl.classify.train`),
the best-validation-loss model saved and scored on the fold's test images. Run folder::

    run_dir/recipe.resolved.yaml  run_dir/splits.json  run_dir/results.{json,md,csv}
    run_dir/fold<i>/model.safetensors   (best validation loss; backbone + head + plan)
    run_dir/fold<i>/history.json        (train / validation loss per epoch)
    run_dir/fold<i>/predictions.csv     (test images: label and class probabilities)

``evaluate_classify`` (eval): the saved fold models of a run on their test folds (the report is
recomputed), or one saved model on every image of the recipe's data (an external test set).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from voxssl.classify.data import ClassificationData, build_data
from voxssl.classify.metrics import auc_scores, mean_std
from voxssl.classify.model import Classifier, HeadSpec, load_classifier, save_classifier
from voxssl.classify.train import FoldIndices, Runner, _evaluate, _logits, train_fold
from voxssl.config.classify import ClassifyConfig
from voxssl.config.recipe import Recipe, recipe_to_dict, save_resolved
from voxssl.device import autocast_dtype, resolve_device, set_cpu_threads
from voxssl.errors import CheckpointError, ConfigError, DataError
from voxssl.eval.folds import load_splits, make_splits, make_stratified_splits, save_splits
from voxssl.fewshot.dinov2 import load_dinov2
from voxssl.utils.atomic import atomic_write_text

if TYPE_CHECKING:  # annotations only: transformers is an optional dependency
    from transformers import Dinov2Model

log = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
#: ``--weights dinov2:<size>``: the released DINOv2 of that size (voxssl cache, then the hub).
RELEASED_PREFIX = "dinov2:"


@dataclass
class FoldReport:
    index: int
    keys: list[str]
    labels: np.ndarray
    probabilities: np.ndarray  # (n, classes)
    auc: dict
    best_epoch: int | None = None
    best_val_loss: float | None = None
    counts: dict | None = None  # class counts of train / val / test


def load_encoder(weights: str) -> tuple[Dinov2Model, str]:
    """The ViT to start from: ``dinov2:<size>`` (released weights, offline cache first), or a
    file / folder the few-shot encoder accepts (Hugging Face folder or safetensors, a voxssl ViT
    encoder, release, run folder or classifier). A bare safetensors without a config is ViT-S/14."""

    if weights.startswith(RELEASED_PREFIX):
        size = weights[len(RELEASED_PREFIX) :]
        return load_dinov2(size), f"released DINOv2-{size}"
    path = Path(weights).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"--weights {weights}: no such file or folder (or give dinov2:small|base|large|giant)"
        )
    return load_dinov2("small", path), str(path)


def make_folds(data: ClassificationData, cfg: ClassifyConfig, run_dir: Path | None):
    """(Splits over sample ids or case keys, FoldIndices per fold) and splits.json in run_dir."""

    cv = cfg.cv
    by_group = cfg.data.kind == "cache"
    ids = sorted(set(data.groups)) if by_group else list(data.keys)
    if cv.split_file is not None:
        splits = load_splits(cv.split_file, ids)
    elif by_group:
        splits = make_splits(ids, "kfold", k=cv.k, seed=cv.seed, val_fraction=cv.val_fraction)
    else:
        splits = make_stratified_splits(ids, list(data.labels), cv.k, cv.seed, cv.val_fraction)
    if run_dir is not None:
        save_splits(splits, run_dir / "splits.json")
    members: dict[str, list[int]] = {}
    for index, key in enumerate(data.groups if by_group else data.keys):
        members.setdefault(key, []).append(index)
    pick = lambda names: np.asarray(  # noqa: E731
        sorted(i for name in names for i in members.get(name, [])), dtype=np.int64
    )
    folds = [FoldIndices(f.index, pick(f.train), pick(f.val), pick(f.test)) for f in splits.folds]
    wanted = cv.folds
    if wanted is not None:
        unknown = sorted(set(wanted) - {f.index for f in folds})
        if unknown:
            raise ConfigError(f"classify.cv.folds: no fold {unknown[0]} (there are {len(folds)})")
        folds = [f for f in folds if f.index in set(wanted)]
    return splits, folds


def _device(cfg: ClassifyConfig):
    device = resolve_device(cfg.device, "classify.device")
    set_cpu_threads(device, cfg.cpu_threads)
    return device, autocast_dtype(cfg.amp, device, "classify.amp")


def run_classify(
    recipe: Recipe,
    cfg: ClassifyConfig,
    weights: str,
    progress: Callable | None = None,
) -> dict:
    """Train and test every fold; returns the report (also written to the run folder)."""
    run_dir = Path(recipe.run_dir)
    data = build_data(recipe, cfg)
    log.info("classification data: %s; classes %s", data.description, data.class_counts())
    _, folds = make_folds(data, cfg, run_dir)
    save_resolved(recipe, run_dir)
    backbone, origin = load_encoder(weights)
    spec = HeadSpec(
        tuple(data.class_names),
        cfg.head,
        cfg.head_hidden,
        cfg.features,
        cfg.image_size,
        cfg.normalise_imagenet,
    )
    device, autocast_dtype = _device(cfg)
    runner = Runner(cfg, device, autocast_dtype, recipe.seed)
    features = None
    if cfg.mode == "linear_probe":  # one pass of the frozen encoder over every image
        probe = Classifier(copy.deepcopy(backbone), spec).to(device)
        features = runner.features(probe, data, np.arange(len(data)))
        del probe
    preprocessing = {
        "input": "grey image in [0, 1] resized to image_size, repeated to 3 channels",
        "image_size": cfg.image_size,
        "normalise_imagenet": cfg.normalise_imagenet,
        **data.preprocessing,
    }
    reports = []
    for fold in folds:
        torch.manual_seed(recipe.seed * 1000 + fold.index)  # the head's initialisation
        model = Classifier(copy.deepcopy(backbone), spec)
        if cfg.mode == "linear_probe":
            for parameter in model.backbone.parameters():
                parameter.requires_grad_(False)
        outcome = train_fold(runner, data, fold, model, features, progress)
        fold_dir = run_dir / f"fold{fold.index}"
        save_classifier(
            fold_dir / MODEL_FILE,
            outcome.model.cpu(),
            preprocessing,
            recipe_to_dict(recipe),
            {
                "init": origin,
                "fold": fold.index,
                "best_epoch": outcome.best_epoch,
                "mode": cfg.mode,
            },
        )
        atomic_write_text(fold_dir / "history.json", json.dumps(outcome.history, indent=2) + "\n")
        report = _fold_report(data, fold, fold.test, outcome.test_probabilities)
        report.best_epoch, report.best_val_loss = outcome.best_epoch, outcome.best_val_loss
        report.counts = {
            part: data.class_counts(getattr(fold, part)) for part in ("train", "val", "test")
        }
        _write_predictions(fold_dir / "predictions.csv", data.class_names, report)
        reports.append(report)
        log.info(
            "fold %d: AUC %.4f (best epoch %d)", fold.index, report.auc["auc"], outcome.best_epoch
        )
        del model, outcome
    title = f"Classification ({cfg.mode.replace('_', ' ')}): {origin}"
    return write_report(run_dir, data.class_names, reports, title, _header(cfg, data, origin))


def evaluate_classify(
    recipe: Recipe, cfg: ClassifyConfig, weights: str, out_dir: Path | None = None
) -> dict:
    """Score saved classifiers: a ``classify train`` run folder (each fold's model on its test
    fold), or one model file on every image of the recipe's data."""
    source = Path(weights).expanduser()
    data = build_data(recipe, cfg)
    device, autocast_dtype = _device(cfg)
    runner = Runner(cfg, device, autocast_dtype, recipe.seed)
    if source.is_dir():
        splits_file = source / "splits.json"
        if not splits_file.is_file():
            raise CheckpointError(
                f"{source}: not a `voxssl classify train` run folder (no splits.json)"
            )
        cfg = copy.deepcopy(cfg)
        cfg.cv.split_file = splits_file
        _, folds = make_folds(data, cfg, None)
        jobs = [
            (fold.index, fold.test, source / f"fold{fold.index}" / MODEL_FILE) for fold in folds
        ]
        jobs = [job for job in jobs if job[2].is_file()]
        if not jobs:
            raise CheckpointError(f"{source}: no fold<i>/{MODEL_FILE} to evaluate")
        out_dir = out_dir or source / "eval"
    elif source.is_file():
        jobs = [(0, np.arange(len(data)), source)]
        out_dir = out_dir or Path(recipe.run_dir) / "eval"
    else:
        raise CheckpointError(f"--weights {weights}: no such file or folder")
    reports = []
    for index, test, path in jobs:
        model, _ = load_classifier(path, device)
        if list(model.spec.class_names) != data.class_names:
            raise DataError(
                f"{path}: the model's classes {list(model.spec.class_names)} differ from the "
                f"data's {data.class_names}"
            )
        runner.cfg = copy.deepcopy(runner.cfg)
        runner.cfg.image_size = model.spec.image_size
        runner.cfg.normalise_imagenet = model.spec.normalise_imagenet
        fold = FoldIndices(index, np.zeros(0, np.int64), np.zeros(0, np.int64), np.asarray(test))

        _, probs = _evaluate(
            model.spec,
            _logits(runner, model, data, fold.test, None),
            torch.as_tensor(data.labels[fold.test]),
        )
        report = _fold_report(data, fold, fold.test, probs)
        _write_predictions(out_dir / f"fold{index}" / "predictions.csv", data.class_names, report)
        reports.append(report)
    save_resolved(recipe, out_dir)
    return write_report(
        out_dir,
        data.class_names,
        reports,
        f"Classification evaluation: {source}",
        _header(cfg, data, str(source)),
    )


def _fold_report(data, fold, indices, probs) -> FoldReport:
    labels = data.labels[indices]
    return FoldReport(
        index=fold.index,
        keys=[data.keys[i] for i in indices],
        labels=labels,
        probabilities=probs,
        auc=auc_scores(probs, labels, data.class_names),
    )


def _header(cfg: ClassifyConfig, data: ClassificationData, origin: str) -> dict:
    return {
        "protocol": "classify",
        "mode": cfg.mode,
        "weights": origin,
        "data": data.description,
        "class_counts": data.class_counts(),
        "image_size": cfg.image_size,
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "head": cfg.head,
    }


def summarize(class_names: list[str], reports: list[FoldReport]) -> dict:
    """AUC mean +- std over folds (per class too), and the AUC of all test predictions pooled."""
    summary = {
        "auc_over_folds": mean_std([r.auc["auc"] for r in reports]),
        "per_class_over_folds": {
            name: mean_std([r.auc["per_class"].get(name, math.nan) for r in reports])
            for name in (class_names[1:] if len(class_names) == 2 else class_names)
        },
    }
    if reports:
        pooled = auc_scores(
            np.concatenate([r.probabilities for r in reports]),
            np.concatenate([r.labels for r in reports]),
            class_names,
        )
        summary["pooled_auc"] = pooled["auc"]
    return summary


def write_report(
    run_dir: Path, class_names: list[str], reports: list[FoldReport], title: str, header: dict
) -> dict:
    """results.json / results.md / results.csv (atomically); returns the JSON data."""
    summary = summarize(class_names, reports)
    data = {
        **header,
        "classes": class_names,
        "positive_class": class_names[1] if len(class_names) == 2 else None,
        "summary": summary,
        "folds": [
            {
                "fold": r.index,
                "auc": r.auc["auc"],
                "per_class": r.auc["per_class"],
                "best_epoch": r.best_epoch,
                "best_val_loss": r.best_val_loss,
                "test_images": len(r.keys),
                "class_counts": r.counts,
            }
            for r in reports
        ],
    }
    atomic_write_text(run_dir / "results.json", json.dumps(_finite(data), indent=2) + "\n")
    atomic_write_text(run_dir / "results.md", _markdown(title, class_names, reports, summary))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["fold", "class", "auc"])
    for r in reports:
        writer.writerow([r.index, "all", _fmt(r.auc["auc"])])
        if len(class_names) > 2:
            for name, value in r.auc["per_class"].items():
                writer.writerow([r.index, name, _fmt(value)])
    atomic_write_text(run_dir / "results.csv", buffer.getvalue())
    return _finite(data)


def _markdown(title: str, class_names: list[str], reports: list[FoldReport], summary: dict) -> str:
    binary = len(class_names) == 2
    what = (
        f"positive class: {class_names[1]}"
        if binary
        else "one-vs-rest per class, mean over classes"
    )
    lines = [f"# {title}", "", f"AUC ({what}); {len(reports)} fold(s).", ""]
    columns = ["fold", "AUC", "test images", "best epoch"] + ([] if binary else class_names)
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in reports:
        row = [str(r.index), _fmt(r.auc["auc"]), str(len(r.keys)), str(r.best_epoch or "-")]
        if not binary:
            row += [_fmt(r.auc["per_class"][name]) for name in class_names]
        lines.append("| " + " | ".join(row) + " |")
    over = summary["auc_over_folds"]
    row = ["**mean ± std**", f"**{_pm(over)}**", "", ""]
    if not binary:
        row += [_pm(summary["per_class_over_folds"][name]) for name in class_names]
    lines.append("| " + " | ".join(row) + " |")
    if "pooled_auc" in summary:
        lines += ["", f"AUC of all test predictions pooled: {_fmt(summary['pooled_auc'])}."]
    return "\n".join(lines) + "\n"


def _write_predictions(path: Path, class_names: list[str], report: FoldReport) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "label", *[f"p_{name}" for name in class_names]])
    for key, label, probs in zip(report.keys, report.labels, report.probabilities, strict=True):
        writer.writerow([key, class_names[int(label)], *[f"{p:.6f}" for p in probs]])
    atomic_write_text(path, buffer.getvalue())


def _fmt(value: float) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _pm(stats: dict) -> str:
    return "-" if stats["n"] == 0 else f"{stats['mean']:.4f} ± {stats['std']:.4f}"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _finite(float(value))
    return value


__all__ = ["MODEL_FILE", "evaluate_classify", "load_encoder", "make_folds", "run_classify"]
