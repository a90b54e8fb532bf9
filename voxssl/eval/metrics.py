"""Per-organ, per-case segmentation metrics (MONAI DiceMetric, HausdorffDistanceMetric p95).

THE Dice rule of voxssl (probes, fine-tuning, few-shot, benchmarks): Dice = 2|P n G| / (|P| + |G|)
as MONAI's DiceMetric computes it, except that an organ absent from both the reference and the
prediction gives NaN (nothing to score; means skip it) rather than a free 1.0. An organ absent
from the reference but predicted scores 0. :func:`dice` applies it to two binary masks,
:func:`score_case` to every class of a label map.

In :func:`score_case` a class counts only where the reference annotates it: voxels labelled
IGNORE_INDEX are removed from both maps and classes outside ``annotated`` (partial labels) give
NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

from voxssl.vocabulary import IGNORE_INDEX


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


def class_dice(prediction: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Dice per channel ``(C,)`` of one-hot maps ``(1, C, *spatial)``, NaN where both are empty."""
    dice = torch.as_tensor(
        DiceMetric(include_background=True, reduction="none", ignore_empty=False)(
            prediction, reference
        )
    )[0]
    spatial = tuple(range(2, prediction.ndim))
    empty = (prediction.sum(dim=spatial)[0] == 0) & (reference.sum(dim=spatial)[0] == 0)
    return torch.where(empty, torch.full_like(dice, float("nan")), dice)


def dice(prediction: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor) -> float:
    """Dice of two binary masks of one shape (the rule in the module docstring: NaN if both empty)."""
    pred = torch.as_tensor(np.asarray(prediction, dtype=bool))
    ref = torch.as_tensor(np.asarray(truth, dtype=bool))
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and truth {tuple(ref.shape)} differ")
    return float(class_dice(pred[None, None].float(), ref[None, None].float())[0])


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
    if prediction.shape != reference.shape:
        raise ValueError(
            f"{case_id}: prediction {prediction.shape} and reference {reference.shape} differ in shape"
        )
    valid = np.asarray(reference) != IGNORE_INDEX
    pred = one_hot(np.where(valid, prediction, 0), class_ids)
    ref = one_hot(np.where(valid, reference, 0), class_ids)
    per_class = class_dice(pred, ref)
    scores = CaseScores(case_id)
    annotated_set = set(class_ids if annotated is None else annotated)
    for c, organ in enumerate(class_ids):
        scores.dice[organ] = float(per_class[c]) if organ in annotated_set else float("nan")
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


__all__ = ["CaseScores", "class_dice", "dice", "one_hot", "score_case"]
