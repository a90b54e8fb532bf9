"""Area under the ROC curve with MONAI's ``ROCAUCMetric``: the positive class's for two classes,
one-vs-rest per class (and their mean, "macro") for more. A class absent from the labels (or the
only one present) has no AUC: NaN, left out of means."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from voxssl.eval.report import _stats


def auc_scores(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """``{"auc": float, "per_class": {name: float}}``; ``probabilities`` (N, C), ``labels`` (N,)."""
    from monai.metrics import ROCAUCMetric

    probs = torch.as_tensor(np.asarray(probabilities, dtype=np.float64))
    targets = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    with warnings.catch_warnings():  # MONAI warns (and returns NaN) for a one-class fold
        warnings.simplefilter("ignore", UserWarning)
        if len(class_names) == 2:
            metric = ROCAUCMetric()
            metric(probs[:, 1:2], targets[:, None])
            value = float(np.asarray(metric.aggregate()))
            return {"auc": value, "per_class": {class_names[1]: value}}
        metric = ROCAUCMetric(average="none")
        one_hot = torch.nn.functional.one_hot(targets, num_classes=len(class_names))
        metric(probs, one_hot)
        per_class = [float(v) for v in np.atleast_1d(metric.aggregate())]
    finite = [v for v in per_class if math.isfinite(v)]
    return {
        "auc": float(np.mean(finite)) if finite else float("nan"),
        "per_class": dict(zip(class_names, per_class, strict=True)),
    }


def mean_std(values: list[float]) -> dict:
    """Mean and (population) standard deviation of the finite values and their count, as the
    segmentation reports compute them."""

    return _stats(values)


__all__ = ["auc_scores", "mean_std"]
