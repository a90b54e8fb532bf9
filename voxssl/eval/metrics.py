"""Per-organ, per-case segmentation metrics (MONAI DiceMetric, HausdorffDistanceMetric p95).

A class counts for a case only where the reference annotates it: voxels labelled IGNORE_INDEX are
removed from both maps, classes outside ``annotated`` (partial labels) give NaN, and an organ absent
from both the reference and the prediction gives NaN (nothing to score) rather than a free 1.0.
An organ absent from the reference but predicted scores 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from voxssl.data.vocabulary import IGNORE_INDEX


@dataclass
class CaseScores:
    case_id: str
    dice: dict[int, float] = field(
        default_factory=dict
    )  # canonical organ id -> Dice (NaN: not scored)
    hd95: dict[int, float] = field(default_factory=dict)  # mm; empty when not computed

    def mean_dice(self) -> float:
        values = [v for v in self.dice.values() if np.isfinite(v)]
        return float(np.mean(values)) if values else float("nan")


def one_hot(label: np.ndarray, class_ids: Sequence[int]) -> torch.Tensor:
    """(1, C, X, Y, Z) float one-hot of the listed canonical ids (background is not a channel)."""
    label_t = torch.as_tensor(np.asarray(label))
    return torch.stack([(label_t == c) for c in class_ids]).unsqueeze(0).float()


def score_case(
    case_id: str,
    prediction: np.ndarray,
    reference: np.ndarray,
    class_ids: Sequence[int],
    spacing: Sequence[float] | None = None,
    annotated: Sequence[int] | None = None,
    hd95: bool = False,
) -> CaseScores:
    """Dice (and optionally HD95 in mm, with ``spacing``) of every class of one case."""
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    if prediction.shape != reference.shape:
        raise ValueError(
            f"{case_id}: prediction {prediction.shape} and reference {reference.shape} differ in shape"
        )
    valid = np.asarray(reference) != IGNORE_INDEX
    pred = one_hot(np.where(valid, prediction, 0), class_ids)
    ref = one_hot(np.where(valid, reference, 0), class_ids)
    empty = (pred.sum(dim=(0, 2, 3, 4)) == 0) & (ref.sum(dim=(0, 2, 3, 4)) == 0)
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, ref)[0]
    scores = CaseScores(case_id)
    annotated_set = set(class_ids if annotated is None else annotated)
    for c, organ in enumerate(class_ids):
        scored = organ in annotated_set and not bool(empty[c])
        scores.dice[organ] = float(dice[c]) if scored else float("nan")
    if hd95:
        with warnings.catch_warnings():  # empty maps give inf/nan, handled below
            warnings.simplefilter("ignore", UserWarning)
            distance = HausdorffDistanceMetric(
                include_background=True, percentile=95, reduction="none"
            )(pred, ref, spacing=list(spacing) if spacing is not None else None)[0]
        for c, organ in enumerate(class_ids):
            value = float(distance[c])
            has_both = bool(pred[0, c].any()) and bool(ref[0, c].any())
            scored = organ in annotated_set and has_both and np.isfinite(value)
            scores.hd95[organ] = value if scored else float("nan")
    return scores


__all__ = ["CaseScores", "one_hot", "score_case"]
