"""``voxssl few-shot segment``: segment a new structure in new scans from one labelled scan.

The support scan and its label are preprocessed in memory like the training cache; C support
slices are taken at fractions (2k + 1) / (2C) of the structure's slice range. Unlike the benchmark
protocol, the query's range is unknown, so every query slice is segmented with all C support
slices together (a C-shot support set: prototypes pooled over them), and connected-component
analysis (3D by default) keeps the most confident component. Predictions are written as NIfTI on
each query's original grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from voxssl.config.data import Modality, PreprocessConfig, as_modality
from voxssl.config.fewshot import FewShotConfig
from voxssl.config.loader import from_dict
from voxssl.data.case import Case
from voxssl.data.preprocess import preprocess_volume
from voxssl.data.readers import read_case_label, read_volume
from voxssl.device import resolve_device, set_cpu_threads
from voxssl.errors import DataError
from voxssl.fewshot.cca import apply_cca
from voxssl.fewshot.checkpoint import load_trainable, read_fewshot_weights
from voxssl.fewshot.encoders import slice_context
from voxssl.fewshot.evaluate import write_prediction
from voxssl.fewshot.inference import segment_slices, to_volume
from voxssl.fewshot.model import ALPNet, build_alpnet
from voxssl.fewshot.protocol import support_slices
from voxssl.fewshot.slices import SliceVolume, organ_slice_range

log = logging.getLogger(__name__)


def load_segmenter(
    weights: Path, device: torch.device
) -> tuple[ALPNet, FewShotConfig, PreprocessConfig | None]:
    """The model a weights file describes, and the preprocessing it was trained with (if stored)."""
    tensors, config, extra = read_fewshot_weights(weights)
    model = build_alpnet(config)
    load_trainable(model, tensors, weights)
    preprocess = None
    if extra.get("preprocess"):
        preprocess = from_dict(
            PreprocessConfig, extra["preprocess"], where="preprocess", source=str(weights)
        )
    return model.to(device).eval(), config, preprocess


def _preprocess(
    image_path: Path, modality: Modality, cfg: PreprocessConfig, label_path: Path | None = None
):

    volume = read_volume(image_path)
    label = None
    if label_path is not None:
        label = read_case_label(
            Case(
                case_id="support", image=Path(image_path), modality=modality, label=Path(label_path)
            ),
            volume,
        )
    image, label, _, meta = preprocess_volume(volume, modality, cfg, label)
    return image, label, meta


def support_set(
    image: np.ndarray,
    label: np.ndarray,
    label_value: int | None,
    chunks: int,
    size: int,
    label_path: Path,
    context: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 3, S, S) support slices and (C, S, S) binary masks of the structure."""
    binary = (label > 0) if label_value is None else (label == label_value)
    slice_range = organ_slice_range(binary.astype(np.uint8), 1)
    if slice_range is None:
        what = "any label" if label_value is None else f"label value {label_value}"
        raise DataError(f"{label_path}: the support label has no voxel of {what}")
    volume = SliceVolume(image, size, binary.astype(np.uint8), context)
    zs = sorted(set(support_slices(slice_range, chunks)))
    return volume.slices(zs), torch.stack([volume.label_slice(z) for z in zs])


def segment_scans(
    weights: Path,
    support_image: Path,
    support_label: Path,
    queries: list[Path],
    out_dir: Path,
    modality: str,
    label_value: int | None = None,
    cca: str = "3d",
    preprocess: PreprocessConfig | None = None,
    device: str = "auto",
    progress: Callable[..., Iterable] | None = None,
) -> list[Path]:
    """Segment every query scan; returns the written NIfTI paths (``<out>/<query name>_fewshot.nii.gz``)."""
    model, config, stored_preprocess = load_segmenter(weights, torch.device("cpu"))
    torch_device = resolve_device(device, "--device")
    set_cpu_threads(torch_device, config.cpu_threads)
    model.to(torch_device)
    cfg = preprocess or stored_preprocess or PreprocessConfig()
    size = config.eval_image_size
    checked = as_modality(modality, "--modality")
    image, label, _ = _preprocess(support_image, checked, cfg, support_label)
    context = slice_context(config.encoder)
    support, support_mask = support_set(
        image, label, label_value, config.eval.chunks, size, support_label, context
    )
    written = []
    for query_path in progress(queries, desc="few-shot segment") if progress else queries:
        q_image, _, meta = _preprocess(query_path, checked, cfg)
        volume = SliceVolume(q_image, size, context=context)
        zs = list(range(volume.depth))
        probability = to_volume(
            segment_slices(
                model,
                support,
                support_mask,
                volume,
                zs,
                torch_device,
                batch=config.eval.query_batch,
            ),
            zs,
            volume,
        )
        mask = apply_cca(probability.transpose(2, 0, 1), cca).transpose(1, 2, 0)
        name = Path(query_path).name.split(".nii")[0]
        target = Path(out_dir) / f"{name}_fewshot.nii.gz"
        write_prediction(target, mask.astype(np.uint8), meta)
        written.append(target)
    return written


__all__ = ["load_segmenter", "segment_scans", "support_set"]
