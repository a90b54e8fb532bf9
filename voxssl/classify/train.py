"""Training one fold: fine-tune (backbone + head, augmented inputs) or linear probe (a head on the
frozen backbone's features of the un-augmented images, computed once for every fold), for
``epochs`` epochs of Adam; after each epoch the loss on the fold's validation images decides
whether this is the best model so far (MediDino: the lowest validation loss is kept); the best
model then predicts the fold's test images."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader

from voxssl.classify.data import ClassificationData, ClassificationDataset
from voxssl.classify.model import Classifier, HeadSpec, loss_function, probabilities
from voxssl.config.classify import ClassifyConfig
from voxssl.device import autocast
from voxssl.training import optimizer_step

log = logging.getLogger(__name__)


@dataclass
class FoldIndices:
    index: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


@dataclass
class FoldOutcome:
    model: Classifier  # the best model (lowest validation loss), in eval mode
    best_epoch: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    test_probabilities: np.ndarray | None = None  # (n_test, classes)


class Runner:
    """Device, precision and batching shared by the folds."""

    def __init__(self, cfg: ClassifyConfig, device: torch.device, autocast_dtype, seed: int):
        self.cfg, self.device, self.autocast_dtype, self.seed = cfg, device, autocast_dtype, seed

    def autocast(self):
        return autocast(self.device, self.cfg.amp, "classify.amp")

    def loader(self, data: ClassificationData, items: list, augment: bool) -> DataLoader:
        cfg = self.cfg
        dataset = ClassificationDataset(
            data,
            cfg.image_size,
            cfg.normalise_imagenet,
            cfg.augment if augment else None,
            seed=self.seed,
        )
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=items,
            num_workers=cfg.num_workers,
            pin_memory=self.device.type == "cuda",
        )

    @torch.no_grad()
    def features(
        self, model: Classifier, data: ClassificationData, indices: np.ndarray
    ) -> torch.Tensor:
        """Pooled backbone features of ``indices`` (un-augmented), (n, F) float32 on the CPU."""
        model.eval()
        out = []
        for images, _ in self.loader(data, [int(i) for i in indices], augment=False):
            with self.autocast():
                out.append(model.features(images.to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)


def _evaluate(
    spec: HeadSpec, logits: torch.Tensor, labels: torch.Tensor
) -> tuple[float, np.ndarray]:
    loss = float(loss_function(spec, logits, labels)) if len(labels) else math.nan
    return loss, probabilities(spec, logits).numpy()


def train_fold(
    runner: Runner,
    data: ClassificationData,
    fold: FoldIndices,
    model: Classifier,
    features: torch.Tensor | None,
    progress: Callable | None = None,
) -> FoldOutcome:
    """Train ``model`` (a fresh copy of the initial backbone and a new head) on one fold.

    ``features``: the frozen backbone's features of every sample (linear probe), else None.
    """
    cfg, device = runner.cfg, runner.device
    model.to(device)
    linear_probe = features is not None
    parameters = model.head.parameters() if linear_probe else model.parameters()
    optimizer = torch.optim.Adam(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = torch.as_tensor(data.labels)
    best_state, best_loss, best_epoch, history = None, math.inf, -1, []
    epochs = range(cfg.epochs)
    bar = progress(epochs, desc=f"fold {fold.index}") if progress else epochs
    for epoch in bar:
        order = np.random.default_rng([runner.seed, fold.index, epoch]).permutation(fold.train)
        model.train()
        if linear_probe:
            model.backbone.eval()
        train_loss, seen = 0.0, 0
        for batch in _batches(runner, data, order, epoch, features, cfg.batch_size):
            inputs, targets = batch
            with runner.autocast():
                logits = model.head(inputs) if linear_probe else model(inputs)
            loss = loss_function(model.spec, logits, targets)
            optimizer_step(loss, optimizer)
            train_loss += float(loss.detach()) * len(targets)
            seen += len(targets)
        record = {"epoch": epoch + 1, "train_loss": train_loss / max(seen, 1)}
        if len(fold.val):
            logits = _logits(runner, model, data, fold.val, features)
            record["val_loss"], _ = _evaluate(model.spec, logits, labels[fold.val])
            improved = record["val_loss"] < best_loss
        else:  # no validation images: the last epoch is kept
            improved = True
        if improved:
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            best_loss, best_epoch = record.get("val_loss", math.nan), epoch + 1
        history.append(record)
        if progress and hasattr(bar, "set_postfix"):
            bar.set_postfix({k: f"{v:.4f}" for k, v in record.items() if k != "epoch"})
    if best_state is not None:  # at least one epoch ran
        model.load_state_dict(best_state)
    model.eval()
    test_logits = _logits(runner, model, data, fold.test, features)
    _, test_probabilities = _evaluate(model.spec, test_logits, labels[fold.test])
    return FoldOutcome(model, best_epoch, best_loss, history, test_probabilities)


def _batches(runner, data, order, epoch, features, batch_size):
    """Training batches on the device: cached features (linear probe) or augmented images."""
    if features is not None:
        labels = torch.as_tensor(data.labels)
        for start in range(0, len(order), batch_size):
            chosen = torch.as_tensor(order[start : start + batch_size])
            yield features[chosen].to(runner.device), labels[chosen].to(runner.device)
        return
    loader = runner.loader(data, [(epoch, int(i)) for i in order], augment=True)
    for images, targets in loader:
        yield images.to(runner.device, non_blocking=True), targets.to(runner.device)


@torch.no_grad()
def _logits(runner, model, data, indices, features) -> torch.Tensor:
    model.eval()
    if features is not None:
        with runner.autocast():
            return model.head(features[torch.as_tensor(indices)].to(runner.device)).float().cpu()
    out = []
    for images, _ in runner.loader(data, [int(i) for i in indices], augment=False):
        with runner.autocast():
            out.append(model(images.to(runner.device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.spec.num_outputs)


__all__ = ["FoldIndices", "FoldOutcome", "Runner", "train_fold"]
