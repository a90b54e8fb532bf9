"""``voxssl predict``: segment new scans (NIfTI files or DICOM folders) with trained weights.

Each scan is read (reoriented to RAS), preprocessed in memory with the preprocessing parameters
stored in the weights' plan (so exactly like the training data), segmented with a sliding window,
mapped back to the scan's own grid and written as ``<name>_seg.nii.gz`` with the scan's qform and
sform (affines and codes), so it overlays the scan in 3D Slicer (a ``voxssl_organs.ctbl`` colour
table names the organs). A ``<name>_seg.png`` preview beside it shows three orthogonal slices
with the labels.

A batch never stops at a bad input: every input is tried, the failures are listed at the end and
the run exits non-zero (:class:`PredictionFailed`). Inputs that share a file name (``p1/ct.nii.gz``,
``p2/ct.nii.gz``) get distinct outputs named after their folders (``p1_ct_seg.nii.gz``).

Scans thinner than the inference window (fewer slices than its depth) are padded by repeating
their edge slices, never with air, and a warning says so. CT labels are kept inside the body mask
that preprocessing computes (``body_mask``: on by default for CT, and whenever the weights were
trained so).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxssl.config.data import PreprocessConfig
from voxssl.config.loader import from_dict
from voxssl.data.preprocess import preprocess_volume
from voxssl.data.readers import nifti_geometry, read_volume
from voxssl.device import Amp, autocast_dtype, resolve_device
from voxssl.errors import CheckpointError, ConfigError, DataError, VoxsslError
from voxssl.eval.inference import (
    label_in_original_geometry,
    predict_probabilities,
    restrict_to_body,
    slicer_colour_table,
    write_label_nifti,
)
from voxssl.eval.overlay import write_preview
from voxssl.hub.resolve import resolve_weights
from voxssl.models.fpn import apply_memory_layout
from voxssl.models.segmentation_weights import load_segmentation_model
from voxssl.utils.atomic import atomic_write_text
from voxssl.vocabulary import organ_name

log = logging.getLogger(__name__)

COLOUR_TABLE_NAME = "voxssl_organs.ctbl"
#: How the sliding window pads a scan smaller than the window: edge slices repeated, not air.
PADDING_MODE = "replicate"
#: Windows per forward pass (the exported MONAI bundle uses the same, for identical results).
PREDICT_SW_BATCH_SIZE = 2


@dataclass
class PredictFailure:
    path: Path
    reason: str


class PredictionFailed(DataError):
    """Some inputs of a batch failed; every other input was predicted (``written``)."""

    def __init__(self, message: str, written: list[Path], failures: list[PredictFailure]):
        super().__init__(message)
        self.written, self.failures = written, failures


@dataclass
class _Outputs:
    written: list[Path] = field(default_factory=list)
    failures: list[PredictFailure] = field(default_factory=list)


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


def preview_name(label_name: str) -> str:
    """``ct_seg.nii.gz`` -> ``ct_seg.png``."""
    return label_name.removesuffix(".nii.gz") + ".png"


def output_names(images: Sequence[Path]) -> list[str]:
    """One distinct output name per input (inputs are distinct paths).

    Inputs whose names collide take as many of their parent folders as it needs to tell them
    apart (``p1/ct.nii.gz``, ``p2/ct.nii.gz`` -> ``p1_ct_seg.nii.gz``, ``p2_ct_seg.nii.gz``);
    whatever still collides is numbered.
    """
    resolved = [Path(os.path.abspath(p)) for p in images]
    base = [output_name(p) for p in resolved]
    names = list(base)
    depth = 0
    while True:
        counts = Counter(names)
        clashing = [i for i, name in enumerate(names) if counts[name] > 1]
        if not clashing:
            return names
        depth += 1
        if depth >= max(len(resolved[i].parts) for i in clashing):
            break
        for i in clashing:
            folders = [p for p in resolved[i].parent.parts[-depth:] if p != os.sep]
            names[i] = "_".join([*folders, base[i]])
    seen: Counter[str] = Counter()
    for i, name in enumerate(names):
        seen[name] += 1
        if seen[name] > 1:
            names[i] = name.removesuffix("_seg.nii.gz") + f"_{seen[name]}_seg.nii.gz"
    return names


def predict_files(
    weights: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    device: str = "auto",
    interpolation: str = "linear",
    sw_batch_size: int = PREDICT_SW_BATCH_SIZE,
    amp: Amp = True,
    progress: bool = True,
    preview: bool = True,
    body_mask: bool | None = None,
    sw_overlap: float | None = None,
) -> list[Path]:
    """Segment every image and write the label maps into ``out_dir``; returns their paths.

    Args:
        sw_batch_size: sliding windows per forward pass.
        amp: bf16 autocast on a GPU (``auto``/True, ``bf16``), fp32 (``fp32``/False); the CPU
            always runs fp32 (``bf16`` there is an error).
        preview: also write ``<name>_seg.png`` (three orthogonal slices with the labels).
        body_mask: keep labels inside the body mask; None: on for CT weights, and for weights
            trained on body-masked labels.
        sw_overlap: sliding-window overlap in [0, 1); None: the one stored with the weights.

    The backbone's feature maps use the device's memory layout
    (:func:`voxssl.models.fpn.apply_memory_layout`: channels-last levels on CPU, same labels).
    Raises :class:`PredictionFailed` after the whole batch when some inputs failed (it lists
    them and carries the paths that were written).
    """
    from tqdm.auto import tqdm

    if not images:
        raise DataError("predict: no input image given")
    missing = [str(p) for p in images if not Path(p).exists()]
    if missing:
        raise DataError(f"predict: input not found: {missing[0]}")
    inputs = _distinct_inputs([Path(p) for p in images])
    names = output_names(inputs)
    path = resolve_weights(str(weights))
    torch_device = resolve_device(device, "--device")
    model, spec, plan = load_segmentation_model(path, device=torch_device)
    apply_memory_layout(model, torch_device)
    autocast_dtype(amp, torch_device, "--amp")  # bf16 on a CPU fails before any scan is read
    overlap = spec.sw_overlap if sw_overlap is None else float(sw_overlap)
    if not 0.0 <= overlap < 1.0 or sw_batch_size < 1:
        raise ConfigError(
            f"predict: overlap must be in [0, 1) and the window batch size >= 1, got {overlap} "
            f"and {sw_batch_size}"
        )
    modality, preprocess_cfg = preprocess_config_from_plan(plan, str(path))
    in_channels = int(plan.model_config(source=str(path)).in_channels)
    restrict = spec.body_restricted or (modality == "ct" if body_mask is None else body_mask)
    out_dir = Path(out_dir)
    outputs = _Outputs()
    settings = {
        "model": model,
        "spec": spec,
        "modality": modality,
        "preprocess_cfg": preprocess_cfg,
        "in_channels": in_channels,
        "restrict": restrict,
        "device": torch_device,
        "sw_batch_size": sw_batch_size,
        "sw_overlap": overlap,
        "amp": amp,
        "interpolation": interpolation,
        "preview": preview,
    }
    for image_path, name in tqdm(
        list(zip(inputs, names, strict=True)), desc="predict", unit="scan", disable=not progress
    ):
        try:  # the output folder appears with the first prediction, never empty
            _predict_one(image_path, out_dir, name, settings, first=not outputs.written)
        except VoxsslError as err:
            reason = str(err)
        except MemoryError:
            reason = (
                "out of memory while predicting (is the scan larger than this machine can hold?)"
            )
        except Exception as err:  # an unexpected reader error on a strange file: the batch goes on
            log.debug("unexpected error on %s", image_path, exc_info=True)
            reason = f"{type(err).__name__}: {err} (run with -v for the traceback)"
        else:
            outputs.written.append(out_dir / name)
            continue
        reason = reason if str(image_path) in reason else f"{image_path}: {reason}"
        outputs.failures.append(PredictFailure(image_path, " ".join(reason.split())))
        log.error("%s", outputs.failures[-1].reason)
    if outputs.failures:
        lines = "\n".join(f"  - {f.reason}" for f in outputs.failures)
        where = f"; {len(outputs.written)} written to {out_dir}" if outputs.written else ""
        raise PredictionFailed(
            f"predict: {len(outputs.failures)} of {len(inputs)} input(s) failed{where}:\n{lines}",
            outputs.written,
            outputs.failures,
        )
    return outputs.written


def _distinct_inputs(images: list[Path]) -> list[Path]:
    """Drop repeats of one input (the same file given twice), keeping the first."""
    seen: dict[Path, Path] = {}
    for image in images:
        key = image.resolve()
        if key in seen:
            log.warning("%s is given more than once; predicted once", seen[key])
            continue
        seen[key] = image
    return list(seen.values())


def _predict_one(
    image_path: Path, out_dir: Path, name: str, settings: dict[str, Any], first: bool
) -> Path:

    spec = settings["spec"]
    in_channels = settings["in_channels"]
    volume = read_volume(image_path, allow_channels=in_channels > 1)
    if volume.num_channels != in_channels:
        raise DataError(
            f"{image_path}: {volume.num_channels} channel(s), the weights expect {in_channels}"
        )
    image, _, body, meta = preprocess_volume(
        volume, settings["modality"], settings["preprocess_cfg"]
    )
    warn_if_thinner_than_window(image_path, image.shape[-3:], spec.sw_roi_size)
    probs = predict_probabilities(
        settings["model"],
        image,
        spec.sw_roi_size,
        settings["sw_overlap"],
        spec.sw_mode,
        settings["sw_batch_size"],
        settings["device"],
        settings["amp"],
        padding_mode=PADDING_MODE,
    )
    if settings["restrict"]:
        probs = restrict_to_body(probs, body, spec.loss)
    label, affine = label_in_original_geometry(
        probs, meta, spec.classes, spec.loss, spec.threshold, settings["interpolation"]
    )
    if first:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / COLOUR_TABLE_NAME, slicer_colour_table(spec.classes))
    target = write_label_nifti(out_dir / name, label, affine, geometry=nifti_geometry(image_path))
    if settings["preview"]:
        write_preview(out_dir / preview_name(name), volume, label)
    log.info("%s -> %s (%s)", image_path, target, _summary(label, spec.classes))
    return target


def warn_if_thinner_than_window(path: Path, shape: Sequence[int], roi_size: Sequence[int]) -> bool:
    """Warn (and return True) when the preprocessed scan has fewer slices than the window.

    (An in-plane extent smaller than the window is padded the same way; it is common for small
    crops and harmless, so it goes unmentioned.)
    """
    slices, window = int(shape[-1]), int(roi_size[-1])
    if slices >= window:
        return False
    log.warning(
        "%s is thinner than the inference window: %d slices after resampling, a %d-slice window; "
        "the window is filled by repeating the edge slices (not air), so labels near the first "
        "and last slices are less reliable",
        path,
        slices,
        window,
    )
    return True


def _summary(label: np.ndarray, class_ids: Sequence[int]) -> str:

    counts: dict[str, Any] = {organ_name(c): int((label == c).sum()) for c in class_ids}
    found = [name for name, n in counts.items() if n]
    return f"{len(found)} of {len(class_ids)} organs found"


__all__ = [
    "COLOUR_TABLE_NAME",
    "PADDING_MODE",
    "PREDICT_SW_BATCH_SIZE",
    "PredictionFailed",
    "output_name",
    "output_names",
    "predict_files",
    "preprocess_config_from_plan",
    "warn_if_thinner_than_window",
]
