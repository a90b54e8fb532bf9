"""Segment query slices with support slices: the C-chunk protocol and the all-support variant.

Probabilities are computed at the network's slice size S, resized back bilinearly to the cached
(X, Y) grid, and returned as an (X, Y, Z) float32 volume (zero outside the segmented slices).
"""

from __future__ import annotations

import numpy as np
import torch

from voxssl.fewshot.alp import grid_size
from voxssl.fewshot.model import ALPNet
from voxssl.fewshot.protocol import (
    query_chunks,
    query_parts_reference,
    support_slices,
    support_slices_reference,
)
from voxssl.fewshot.slices import SliceVolume, resize_back
from voxssl.fewshot.ttt import TestTimeTrainer
from voxssl.vocabulary import IGNORE_INDEX


def binary_support_label(volume: SliceVolume, z: int, organ: int) -> torch.Tensor:
    """(S, S) uint8: 1 organ, 0 other, 255 where the label is not annotated."""
    label = volume.label_slice(z)
    out = (label == organ).to(torch.uint8)
    out[label == IGNORE_INDEX] = IGNORE_INDEX
    return out


@torch.no_grad()
def _predict(
    model: ALPNet,
    support: torch.Tensor,
    support_label: torch.Tensor,
    query: torch.Tensor,
    device: torch.device,
) -> torch.Tensor:
    model.eval()
    return model(support.to(device), support_label.to(device), query.to(device)).float().cpu()


@torch.no_grad()
def _predict_batched(
    model: ALPNet,
    support: torch.Tensor,
    support_label: torch.Tensor,
    query_volume: SliceVolume,
    zs: list[int],
    device: torch.device,
    batch: int,
) -> torch.Tensor:
    """The support encoded once, the queries ``batch`` slices at a time."""
    model.eval()
    s_feat = model.encode(support.to(device))
    label = support_label.to(device)
    out = []
    for start in range(0, len(zs), batch):
        query = query_volume.slices(zs[start : start + batch]).to(device)
        out.append(
            model.segment_features(s_feat, label, model.encode(query), grid_size(query))
            .float()
            .cpu()
        )
    return torch.cat(out)


def segment_slices(
    model: ALPNet,
    support: torch.Tensor,
    support_label: torch.Tensor,
    query_volume: SliceVolume,
    zs: list[int],
    device: torch.device,
    ttt: TestTimeTrainer | None = None,
    rng: np.random.Generator | None = None,
    reset_each_slice: bool = True,
    batch: int = 8,
) -> torch.Tensor:
    """Foreground probability (len(zs), S, S) of query slices ``zs`` given a support set (K, 3, S, S)."""
    if not zs:
        return torch.zeros(0, query_volume.size, query_volume.size)
    if ttt is None:
        return _predict_batched(model, support, support_label, query_volume, zs, device, batch)
    if rng is None:
        raise ValueError("segment_slices: test-time training (ttt) needs rng for its augmentations")
    out = []
    for z in zs:
        query = query_volume.slice(z)[None]
        probability = _predict(model, support, support_label, query, device)
        ttt.adapt(query.to(device), (probability > 0.5).to(torch.uint8).to(device), rng)
        probability = _predict(model, support, support_label, query, device)
        if reset_each_slice:
            ttt.reset()
        out.append(probability[0])
    return torch.stack(out)


def to_volume(probability: torch.Tensor, zs: list[int], volume: SliceVolume) -> np.ndarray:
    """(len(zs), S, S) -> (X, Y, Z) float32 on the cached grid, zero elsewhere."""
    full = np.zeros(volume.image.shape, dtype=np.float32)
    if zs:
        full[:, :, zs] = (
            resize_back(probability, volume.shape_xy).clamp(0, 1).numpy().transpose(1, 2, 0)
        )
    return full


def chunk_plan(
    support_label: np.ndarray,
    query_label: np.ndarray,
    organ: int,
    chunks: int,
    chunk_rule: str = "reference",
    scored_slices: str = "organ_range",
) -> tuple[list[int], list[list[int]]] | None:
    """Support slice and query slices of every chunk (``voxssl.fewshot.protocol``); None when the
    organ is missing from the support or the query scan."""
    support_present = np.flatnonzero((np.asarray(support_label) == organ).any(axis=(0, 1)))
    query_present = np.flatnonzero((np.asarray(query_label) == organ).any(axis=(0, 1)))
    if support_present.size == 0 or query_present.size == 0:
        return None
    support_range = (int(support_present[0]), int(support_present[-1]))
    query_range = (int(query_present[0]), int(query_present[-1]))
    if scored_slices == "organ_present":
        scored = [int(z) for z in query_present]
    elif scored_slices == "organ_range":
        scored = list(range(query_range[0], query_range[1] + 1))
    else:
        raise ValueError(f"unknown scored_slices {scored_slices!r}")
    if chunk_rule == "reference":
        anchors = support_slices_reference(support_present.tolist(), chunks)
        parts = query_parts_reference(scored, query_range, chunks)
    elif chunk_rule == "equal":
        anchors = support_slices(support_range, chunks)
        keep = set(scored)
        parts = [[z for z in part if z in keep] for part in query_chunks(query_range, chunks)]
    else:
        raise ValueError(f"unknown chunk_rule {chunk_rule!r}")
    return anchors, parts


def segment_organ_chunks(
    model: ALPNet,
    support_volume: SliceVolume,
    organ: int,
    anchors: list[int],
    query_volume: SliceVolume,
    parts: list[list[int]],
    device: torch.device,
    ttt: TestTimeTrainer | None = None,
    rng: np.random.Generator | None = None,
    reset_each_slice: bool = True,
    batch: int = 8,
) -> tuple[np.ndarray, list[int]]:
    """The C-chunk protocol for one organ in one query scan: query slices ``parts[k]`` are segmented
    with support slice ``anchors[k]``; returns (X, Y, Z) probabilities and the scored slices."""
    all_zs: list[int] = []
    probabilities = []
    for anchor, zs in zip(anchors, parts, strict=True):
        if not zs:
            continue
        support = support_volume.slice(anchor)[None]
        label = binary_support_label(support_volume, anchor, organ)[None]
        probabilities.append(
            segment_slices(
                model, support, label, query_volume, zs, device, ttt, rng, reset_each_slice, batch
            )
        )
        all_zs.extend(zs)
    probability = (
        torch.cat(probabilities)
        if probabilities
        else torch.zeros(0, query_volume.size, query_volume.size)
    )
    return to_volume(probability, all_zs, query_volume), all_zs


__all__ = [
    "binary_support_label",
    "chunk_plan",
    "segment_organ_chunks",
    "segment_slices",
    "to_volume",
]
