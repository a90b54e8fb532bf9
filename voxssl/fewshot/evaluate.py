"""``voxssl few-shot eval``: the 1-way 1-shot, C-chunk, 5-fold protocol; Dice per 3D scan.

For every organ group and fold: the fold's model (trained without the support scan, and in
Setting 2 without any slice of the group's organs) segments every organ of the group in every
query scan of the fold, chunk by chunk, with support slices from the support scan. Only the
slices inside the query organ's range are scored (the protocol uses the ground truth to pick
them). Dice is computed per scan on the cached grid, averaged over scans, then over organs.
Predictions are written as NIfTI on each scan's original grid, one file per organ and scan
(``predictions/<case>_<organ>.nii.gz``, the organ id inside the scored slices, 0 elsewhere).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxssl.config.fewshot import FewShotConfig
from voxssl.data.geometry import to_original_geometry
from voxssl.device import resolve_device, set_cpu_threads
from voxssl.errors import CheckpointError
from voxssl.eval.metrics import dice
from voxssl.fewshot.augment import EpisodeAugment
from voxssl.fewshot.cca import apply_cca
from voxssl.fewshot.checkpoint import load_trainable, read_fewshot_weights
from voxssl.fewshot.data import fewshot_cases, fold_splits, group_class_ids, model_name
from voxssl.fewshot.encoders import slice_context
from voxssl.fewshot.inference import chunk_plan, segment_organ_chunks
from voxssl.fewshot.model import ALPNet, build_alpnet
from voxssl.fewshot.slices import SliceVolume, organ_slice_range
from voxssl.fewshot.superpixels import case_store_key
from voxssl.fewshot.ttt import TestTimeTrainer
from voxssl.utils.atomic import atomic_path, atomic_write_text
from voxssl.vocabulary import organ_name

log = logging.getLogger(__name__)

Progress = Callable[..., Iterable]


@dataclass
class ScanResult:
    group: int
    fold: int
    organ: str
    case: str
    support: str
    dice: float
    slices: int


@dataclass
class EvalResults:
    setting: int
    cca: str
    ttt: bool
    scans: list[ScanResult] = field(default_factory=list)

    def per_organ(self) -> dict[str, float]:
        organs: dict[str, list[float]] = {}
        for result in self.scans:
            organs.setdefault(result.organ, []).append(result.dice)
        return {organ: float(np.mean(values)) for organ, values in organs.items()}

    def mean(self) -> float:
        per_organ = self.per_organ()
        return float(np.mean(list(per_organ.values()))) if per_organ else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "setting": self.setting,
            "cca": self.cca,
            "ttt": self.ttt,
            "dice_mean": self.mean(),
            "dice_per_organ": self.per_organ(),
            "scans": [vars(r) for r in self.scans],
        }

    def to_markdown(self) -> str:
        organs = self.per_organ()
        lines = [
            f"Setting {self.setting}, 1-way 1-shot, CCA {self.cca}, TTT {'on' if self.ttt else 'off'}",
            "",
            "| " + " | ".join([*organs, "mean"]) + " |",
            "|" + "---|" * (len(organs) + 1),
            "| " + " | ".join(f"{100 * v:.2f}" for v in [*organs.values(), self.mean()]) + " |",
            "",
            "| organ | scan | fold | support | slices | Dice % |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r.organ} | {r.case} | {r.fold} | {r.support} | {r.slices} | {100 * r.dice:.2f} |"
            for r in self.scans
        ]
        return "\n".join(lines) + "\n"


def weights_file(weights: Path, name: str) -> Path:
    """``weights`` is one file (used for every model) or a folder (``models/<name>.safetensors``)."""
    weights = Path(weights)
    if weights.is_file():
        return weights
    for candidate in (weights / f"{name}.safetensors", weights / "models" / f"{name}.safetensors"):
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"--weights {weights}: no {name}.safetensors in it (train with `voxssl few-shot train`)"
    )


def load_model(
    config: FewShotConfig, weights: Path | None, name: str, device: torch.device
) -> ALPNet:
    """Build the recipe's model and load the trained weights of model ``name``; the encoders must match.

    A model without trainable parameters (the frozen voxssl3d encoder) needs no weights.
    """
    model = build_alpnet(config)
    if not any(p.requires_grad for p in model.parameters()):
        return model.to(device).eval()
    if weights is None:
        raise CheckpointError("--weights is required: this model has trained parameters")
    path = weights_file(weights, name)
    tensors, stored, _ = read_fewshot_weights(path)
    for key in ("type", "size", "input_mode"):
        if getattr(stored.encoder, key) != getattr(config.encoder, key) and not (
            key == "size" and config.encoder.type != "dinov2"
        ):
            raise CheckpointError(
                f"{path}: trained with encoder.{key}={getattr(stored.encoder, key)!r}, "
                f"the recipe has {getattr(config.encoder, key)!r}"
            )
    if (stored.encoder.lora.enabled, stored.encoder.lora.rank) != (
        config.encoder.lora.enabled,
        config.encoder.lora.rank,
    ):
        raise CheckpointError(
            f"{path}: trained with a different encoder.lora setting than the recipe"
        )
    if stored.encoder.type == "cnn" and stored.encoder.cnn_channels != config.encoder.cnn_channels:
        raise CheckpointError(
            f"{path}: trained with encoder.cnn_channels={stored.encoder.cnn_channels}"
        )
    load_trainable(model, tensors, path)
    return model.to(device).eval()


def write_prediction(path: Path, label: np.ndarray, meta: dict[str, Any]) -> None:
    """(X, Y, Z) cached-grid label -> NIfTI on the scan's original grid (atomic)."""
    import nibabel as nib

    array, affine = to_original_geometry(label.astype(np.uint8), meta, order="nearest")
    image = nib.Nifti1Image(array.astype(np.uint8), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))


def evaluate_protocol(
    cache_dir: Path,
    config: FewShotConfig,
    weights: Path,
    out_dir: Path,
    groups: list[int] | None = None,
    folds: list[int] | None = None,
    progress: Progress | None = None,
) -> EvalResults:
    ev = config.eval
    device = resolve_device(config.device, "fewshot.device")
    set_cpu_threads(device, config.cpu_threads)
    cases = fewshot_cases(cache_dir, config.source)
    splits = fold_splits(cases, config)
    class_groups = group_class_ids(config)
    results = EvalResults(ev.setting, ev.cca, ev.ttt.enabled)
    augment = EpisodeAugment(config.augment)
    size = config.eval_image_size
    context = slice_context(config.encoder)
    for group, organs in enumerate(class_groups):
        if groups is not None and group not in groups:
            continue
        for split in splits:
            if folds is not None and split.fold not in folds:
                continue
            model = load_model(config, weights, model_name(ev.setting, group, split.fold), device)
            ttt = TestTimeTrainer(model, ev.ttt, augment) if ev.ttt.enabled else None
            support_label = np.asarray(split.support.label())
            support = SliceVolume(split.support.image(), size, support_label, context)
            scans = (
                progress(split.query, desc=f"group {group} fold {split.fold}")
                if progress
                else split.query
            )
            for case in scans:
                label = np.asarray(case.label())
                query = SliceVolume(case.image(), size, context=context)
                for organ in organs:
                    plan = chunk_plan(
                        support_label, label, organ, ev.chunks, ev.chunk_rule, ev.scored_slices
                    )
                    if plan is None:
                        missing = (
                            "the support scan"
                            if organ_slice_range(support_label, organ) is None
                            else "the query scan"
                        )
                        log.warning(
                            "%s: organ %s missing in %s",
                            case_store_key(case),
                            organ_name(organ),
                            missing,
                        )
                        continue
                    anchors, parts = plan
                    rng = np.random.default_rng([config.seed, group, split.fold, organ])
                    probability, zs = segment_organ_chunks(
                        model,
                        support,
                        organ,
                        anchors,
                        query,
                        parts,
                        device,
                        ttt,
                        rng,
                        ev.ttt.reset == "slice",
                        ev.query_batch,
                    )
                    if ttt is not None and ev.ttt.reset == "scan":
                        ttt.reset()
                    mask = np.zeros(label.shape, dtype=bool)
                    mask[:, :, zs] = apply_cca(
                        probability[:, :, zs].transpose(2, 0, 1), ev.cca
                    ).transpose(1, 2, 0)
                    score = dice(mask[:, :, zs], label[:, :, zs] == organ)
                    results.scans.append(
                        ScanResult(
                            group,
                            split.fold,
                            organ_name(organ),
                            case.case_id,
                            split.support.case_id,
                            score,
                            len(zs),
                        )
                    )
                    if ev.write_predictions:  # one binary map per organ: exactly what was scored
                        name = f"{case.case_id}_{organ_name(organ)}.nii.gz"
                        write_prediction(
                            Path(out_dir) / "predictions" / name,
                            mask.astype(np.uint8) * organ,
                            case.meta,
                        )
    save_results(results, out_dir)
    return results


def save_results(results: EvalResults, out_dir: Path) -> None:
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "results.json", json.dumps(results.to_json(), indent=1))
    atomic_write_text(out_dir / "results.md", results.to_markdown())


__all__ = [
    "EvalResults",
    "ScanResult",
    "evaluate_protocol",
    "load_model",
    "weights_file",
    "write_prediction",
]
