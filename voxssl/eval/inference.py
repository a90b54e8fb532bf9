"""Sliding-window prediction on a preprocessed volume, and the way back to the scan's own grid.

Inference: MONAI ``sliding_window_inference`` over the preprocessed (cached-grid) volume with the
training patch size, overlap 0.5 and Gaussian blending of the per-window *probabilities*.

Back to the original geometry (crop undone, resampling undone, reorientation undone, written with
the original affine so that it overlays the source in 3D Slicer). voxssl's default is
``interpolation="linear"``: every class' probability map is resampled trilinearly to the original
grid and the label is decided there (threshold / argmax), one channel at a time so that memory
stays at two volumes of the original size. This gives smooth organ borders at the usually finer
in-plane resolution of the scan instead of the staircase of a nearest-neighbour label. With
``interpolation="nearest"`` the label decided on the cached grid is mapped back by nearest
neighbour, the exact inverse of the preprocessing's label resampling (see
:mod:`voxssl.data.geometry`). Both are identical where the target spacing equals the scan's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from voxssl.data.geometry import to_original_geometry
from voxssl.device import autocast
from voxssl.eval.overlay import ORGAN_COLOURS
from voxssl.models.segmentation import (
    SegmentationModel,
    labels_from_channels,
    probabilities_to_label,
)
from voxssl.utils.atomic import atomic_path
from voxssl.vocabulary import organ_name

if TYPE_CHECKING:
    from voxssl.data.readers import NiftiGeometry

Interpolation = Literal["linear", "nearest"]


@torch.no_grad()
def predict_probabilities(
    model: SegmentationModel,
    image: np.ndarray,
    roi_size: Sequence[int],
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 2,
    device: torch.device | str = "cpu",
    amp: bool = False,
    progress: bool = False,
    padding_mode: str = "constant",
) -> torch.Tensor:
    """Blended probabilities (C_out, X, Y, Z) float32 on the CPU for an image (X, Y, Z) or (C, X, Y, Z).

    ``model`` maps an image batch to probabilities (:meth:`SegmentationModel.predict_probabilities`
    via a small wrapper, see :func:`probability_predictor`). ``padding_mode``: how an image
    smaller than ``roi_size`` is padded (MONAI's: ``constant`` zeros, ``replicate`` its edges).
    """
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    tensor = (tensor[None] if tensor.ndim == 3 else tensor)[None].to(device)
    was_training = model.training
    model.eval()
    with autocast(device, amp):
        probs = sliding_window_inference(
            tensor,
            roi_size=tuple(int(p) for p in roi_size),
            sw_batch_size=sw_batch_size,
            predictor=probability_predictor(model),
            overlap=overlap,
            mode=mode,
            sw_device=device,
            device=torch.device("cpu"),
            progress=progress,
            padding_mode=padding_mode,
        )
    model.train(was_training)
    return probs[0].float()


def probability_predictor(model: SegmentationModel) -> Callable[[torch.Tensor], torch.Tensor]:
    def predict(batch: torch.Tensor) -> torch.Tensor:
        return model.predict_probabilities(batch).float()

    return predict


def restrict_to_body(probs: torch.Tensor, body_mask: np.ndarray, kind: str) -> torch.Tensor:
    """Voxels outside the body become background (the loss never saw them)."""
    outside = torch.from_numpy(~np.asarray(body_mask, dtype=bool))
    probs = probs.clone()
    if kind == "bce":
        probs[:, outside] = 0.0
    else:
        probs[1:, outside] = 0.0
        probs[0, outside] = 1.0
    return probs


def label_in_original_geometry(
    probs: torch.Tensor | np.ndarray,
    meta: dict[str, Any],
    class_ids: Sequence[int],
    kind: str,
    threshold: float = 0.5,
    interpolation: Interpolation = "linear",
) -> tuple[np.ndarray, np.ndarray]:
    """(label in the file's grid and axis order, original affine) from cached-grid probabilities."""
    probs = probs.numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
    if interpolation == "nearest":
        label = probabilities_to_label(probs, class_ids, kind, threshold)
        return to_original_geometry(label, meta, order="nearest", fill=0)
    if interpolation != "linear":
        raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
    affine = np.asarray(meta["original_affine"], dtype=np.float64)

    def channels() -> Iterator[tuple[int, np.ndarray]]:
        for c in range(probs.shape[0]):
            background = kind == "ce" and c == 0  # outside the crop is background: probability 1
            mapped, _ = to_original_geometry(
                probs[c].astype(np.float32), meta, order="linear", fill=1.0 if background else 0.0
            )
            yield c, mapped

    return labels_from_channels(channels(), kind, threshold, class_ids), affine


def write_label_nifti(
    path: Path, label: np.ndarray, affine: np.ndarray, geometry: NiftiGeometry | None = None
) -> Path:
    """Write a uint8 label map atomically.

    ``geometry``: the source NIfTI's qform and sform (affines and codes), copied as they are, so
    that viewers place the label exactly where they place the scan; without it (a DICOM source)
    both are ``affine`` with code 1 (scanner).
    """
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(label, dtype=np.uint8), np.asarray(affine, dtype=np.float64))
    if geometry is None:
        image.set_qform(affine, code=1)
        image.set_sform(affine, code=1)
    else:
        image.set_qform(geometry.qform, code=geometry.qform_code)
        image.set_sform(geometry.sform, code=geometry.sform_code)
    image.header.set_intent("label")
    image.header["descrip"] = b"voxssl prediction (canonical organ ids)"
    with atomic_path(path, suffix=".nii.gz") as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def slicer_colour_table(class_ids: Sequence[int]) -> str:
    """A 3D Slicer colour table (``.ctbl``: ``id name R G B A``) naming the predicted organs."""

    lines = [
        "# voxssl organ colour table (load in 3D Slicer with the prediction)",
        "0 background 0 0 0 0",
    ]
    for organ in class_ids:
        r, g, b = (int(v) for v in ORGAN_COLOURS[organ % len(ORGAN_COLOURS)])
        lines.append(f"{organ} {organ_name(organ)} {r} {g} {b} 255")
    return "\n".join(lines) + "\n"


__all__ = [
    "label_in_original_geometry",
    "predict_probabilities",
    "restrict_to_body",
    "slicer_colour_table",
    "write_label_nifti",
]
