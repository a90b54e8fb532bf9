"""``voxssl predict``: segment new scans (NIfTI files or DICOM folders) with trained weights.

Each scan is read (reoriented to RAS), preprocessed in memory with the preprocessing parameters
stored in the weights' plan (so exactly like the training data), segmented with a sliding window,
mapped back to the scan's own grid and written as ``<name>_seg.nii.gz`` with the scan's affine,
so it overlays the scan in 3D Slicer (a ``voxssl_organs.ctbl`` colour table names the organs).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxssl.config.data import PreprocessConfig
from voxssl.config.loader import from_dict
from voxssl.data.preprocess import preprocess_volume
from voxssl.data.readers import read_volume
from voxssl.device import resolve_device
from voxssl.errors import CheckpointError, ConfigError, DataError
from voxssl.eval.inference import (
    label_in_original_geometry,
    predict_probabilities,
    restrict_to_body,
    slicer_colour_table,
    write_label_nifti,
)
from voxssl.hub.resolve import resolve_weights
from voxssl.models.segmentation_weights import load_segmentation_model
from voxssl.utils.atomic import atomic_write_text
from voxssl.vocabulary import organ_name

log = logging.getLogger(__name__)

COLOUR_TABLE_NAME = "voxssl_organs.ctbl"


def preprocess_config_from_plan(plan, source: str):
    """The recipe ``preprocess`` section that reproduces the plan's preprocessing."""

    pre = plan.preprocessing or {}
    modality = pre.get("modality")
    if modality not in ("ct", "mr") or pre.get("spacing") is None:
        raise CheckpointError(
            f"{source}: the plan records no preprocessing (modality, spacing); cannot preprocess new scans"
        )
    section = {"spacing": pre["spacing"], **pre.get("intensity", {})}
    try:
        return modality, from_dict(
            PreprocessConfig, {modality: section}, where="preprocess", source=f"{source} (plan)"
        )
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


def output_name(image_path: Path) -> str:
    name = image_path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)] + "_seg.nii.gz"
    return name + "_seg.nii.gz"  # a DICOM folder


def predict_files(
    weights: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    device: str = "auto",
    interpolation: str = "linear",
    sw_batch_size: int = 2,
    amp: bool = True,
    progress: bool = True,
) -> list[Path]:
    """Segment every image and write the label maps into ``out_dir``; returns their paths."""
    from tqdm.auto import tqdm

    if not images:
        raise DataError("predict: no input image given")
    missing = [str(p) for p in images if not Path(p).exists()]
    if missing:
        raise DataError(f"predict: input not found: {missing[0]}")
    path = resolve_weights(str(weights))
    torch_device = resolve_device(device, "--device")
    model, spec, plan = load_segmentation_model(path, device=torch_device)
    modality, preprocess_cfg = preprocess_config_from_plan(plan, str(path))
    in_channels = int(plan.model_config(source=str(path)).in_channels)
    out_dir = Path(out_dir)
    written: list[Path] = []
    for image_path in tqdm(
        [Path(p) for p in images], desc="predict", unit="scan", disable=not progress
    ):
        volume = read_volume(image_path, allow_channels=in_channels > 1)
        if volume.num_channels != in_channels:
            raise DataError(
                f"{image_path}: {volume.num_channels} channel(s), the weights expect {in_channels}"
            )
        image, _, body, meta = preprocess_volume(volume, modality, preprocess_cfg)
        probs = predict_probabilities(
            model,
            image,
            spec.sw_roi_size,
            spec.sw_overlap,
            spec.sw_mode,
            sw_batch_size,
            torch_device,
            amp,
        )
        if spec.body_restricted:
            probs = restrict_to_body(probs, body, spec.loss)
        label, affine = label_in_original_geometry(
            probs, meta, spec.classes, spec.loss, spec.threshold, interpolation
        )  # type: ignore[arg-type]
        if not written:  # the output folder appears with the first prediction, never empty
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / COLOUR_TABLE_NAME, slicer_colour_table(spec.classes))
        target = write_label_nifti(out_dir / output_name(image_path), label, affine)
        log.info("%s -> %s (%s)", image_path, target, _summary(label, spec.classes))
        written.append(target)
    return written


def _summary(label: np.ndarray, class_ids: Sequence[int]) -> str:

    counts: dict[str, Any] = {organ_name(c): int((label == c).sum()) for c in class_ids}
    found = [name for name, n in counts.items() if n]
    return f"{len(found)} of {len(class_ids)} organs found"


__all__ = ["COLOUR_TABLE_NAME", "output_name", "predict_files", "preprocess_config_from_plan"]
