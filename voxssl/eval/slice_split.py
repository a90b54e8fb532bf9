"""A one-scan probe: train on the labels below an axial cut, score the slices above it.

A smoke protocol for a single labelled scan (no cross-validation possible): the preprocessed
volume is cut at the axial slice that splits the organs most evenly (:func:`split_slice`); the
labels of the inferior part train the head, the superior part is predicted with a sliding window
and scored per organ. The backbone sees the whole image on both sides (its features of a voxel
near the cut are those of the full scan, not of a thin slab padded with zeros); only the labels
are split: above the cut they are ignored in training (IGNORE_INDEX, outside the loss mask). It
checks the whole downstream stack on real anatomy in a few CPU minutes, not a benchmark number to
compare with papers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxssl.config.data import PreprocessConfig
from voxssl.config.downstream import DownstreamConfig
from voxssl.data.preprocess import preprocess_volume
from voxssl.data.readers import read_volume
from voxssl.device import resolve_device
from voxssl.errors import DataError
from voxssl.eval.inference import predict_probabilities, restrict_to_body
from voxssl.eval.metrics import CaseScores, score_case
from voxssl.eval.protocol import training_sampler
from voxssl.eval.sampling import labelled_volume
from voxssl.eval.train import train_segmentation
from voxssl.models.fpn import FPN
from voxssl.models.segmentation import SegmentationModel, output_channels, probabilities_to_label
from voxssl.models.segmentation_heads import build_head
from voxssl.vocabulary import IGNORE_INDEX


def _halves(array: np.ndarray, cut: int) -> tuple[np.ndarray, np.ndarray]:
    return array[..., :cut], array[..., cut:]


def _labels_below(label: np.ndarray, body: np.ndarray, cut: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, body mask) with the slices from ``cut`` up unannotated: no loss is computed there."""

    hidden_label, hidden_body = label.copy(), np.asarray(body, dtype=bool).copy()
    hidden_label[..., cut:] = IGNORE_INDEX
    hidden_body[..., cut:] = False
    return hidden_label, hidden_body


def split_slice(label: np.ndarray) -> int:
    """The axial slice that splits the organs most evenly: the median, over the organs present, of
    each organ's median axial slice (by voxel count).

    Each organ counts once, so a large organ (the liver) does not decide alone, and every organ
    that spans the cut has voxels to train on below it and to score above it. The middle of the
    labelled slab is a worse cut on scans that end inside the abdomen: most organ voxels then lie
    on one side. Without organs, the middle of the volume.
    """

    organ_ids = [int(c) for c in np.unique(label) if c != 0 and c != IGNORE_INDEX]
    if not organ_ids:
        return label.shape[-1] // 2
    medians = []
    for organ in organ_ids:
        per_slice = (label == organ).sum(axis=(0, 1))
        medians.append(int(np.searchsorted(np.cumsum(per_slice), per_slice.sum() / 2)))
    return int(np.clip(round(float(np.median(medians))), 1, label.shape[-1] - 1))


def slice_split_probe(
    image_path: Path,
    label_path: Path,
    modality: str,
    preprocess: PreprocessConfig,
    cfg: DownstreamConfig,
    backbone: FPN,
    seed: int = 0,
) -> tuple[CaseScores, dict[str, Any]]:
    """Train ``cfg.head`` on the lower half of the scan, return the upper half's scores and facts."""

    volume = read_volume(image_path)
    label_volume = read_volume(label_path)
    label = np.rint(label_volume.data).astype(np.uint8)
    image, cached_label, body, meta = preprocess_volume(volume, modality, preprocess, label=label)
    if cached_label is None:  # a label went in, so one comes out
        raise DataError(f"{label_path}: preprocessing returned no label")
    class_ids = cfg.class_ids()
    cut = split_slice(cached_label)
    rng = np.random.default_rng(seed)
    train = labelled_volume(
        "lower_labels", image, *_labels_below(cached_label, body, cut), class_ids, None, rng
    )
    device = resolve_device(cfg.device, "probe.device")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = build_head(
            cfg.head.kind,
            list(backbone.level_channels),
            output_channels(cfg.loss, len(class_ids)),
            cfg.head.hidden_channels,
            cfg.head.blocks_per_level,
            cfg.head.feature_norm,
        )
    model = SegmentationModel(backbone, head, loss_kind=cfg.loss)
    sampler = training_sampler(backbone, [train], cfg, rng, device, where="slice-split probe")
    history = train_segmentation(model, sampler, cfg, device, description="slice-split probe")
    probs = predict_probabilities(
        model,
        image,
        cfg.inference_roi,
        cfg.sw_overlap,
        cfg.sw_mode,
        cfg.sw_batch_size,
        device,
        cfg.amp,
    )
    if cfg.body_restricted_loss:
        probs = restrict_to_body(probs, body, cfg.loss)
    prediction = probabilities_to_label(probs[..., cut:], class_ids, cfg.loss, cfg.threshold)
    scores = score_case(
        "upper_part",
        prediction,
        cached_label[..., cut:],
        class_ids,
        spacing=meta["spacing"],
        hd95=cfg.hd95,
    )
    facts = {
        "preprocessed_shape": list(image.shape),
        "cut_slice": cut,
        "train_organs": [int(c) for c in class_ids if (cached_label[..., :cut] == c).any()],
        "first_loss": history[0]["loss"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "train_seconds": history[-1]["seconds"] if history else None,
    }
    return scores, facts


def organs_in_both_halves(
    label: np.ndarray, class_ids: Sequence[int], min_voxels: int = 20
) -> list[int]:
    """Organs with at least ``min_voxels`` voxels on both sides of :func:`split_slice`."""
    lower, upper = _halves(label, split_slice(label))
    return [
        c
        for c in class_ids
        if (lower == c).sum() >= min_voxels and (upper == c).sum() >= min_voxels
    ]


__all__ = ["organs_in_both_halves", "slice_split_probe", "split_slice"]
