"""Preprocess one scan: RAS (done by the reader) -> crop -> resample -> intensities to [0, 1].

CT (seed 004 / vox2vec): resample to the target spacing, crop to the minimal box of voxels above
``crop_threshold_hu``, clip to ``window_hu`` and scale to [0, 1].
MR (seed 004): resample, clip each channel to its ``percentiles`` and scale to [0, 1], crop to the
box of voxels above ``crop_threshold`` (on the scaled image).

The crop box is found on the source grid and mapped to the resampled grid (see
:mod:`voxssl.data.geometry`), so only the kept region is ever resampled: that is what keeps a
512x512x150 CT within a few seconds and a few hundred MB. Every geometric fact needed to go back
to the file's grid is recorded in the returned ``meta``.

The geometry is done here rather than with MONAI's ``Spacing`` / ``CropForeground`` because the
grid must be the one of :mod:`voxssl.data.geometry` (voxel 0 shared with the source, exact
spacing) for labels to round-trip exactly, and because worker processes then need no torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from voxssl.config.data import CTPreprocessConfig, MRPreprocessConfig, PreprocessConfig
from voxssl.data import geometry
from voxssl.data.body_mask import body_mask as compute_body_mask
from voxssl.data.modality_check import modality_mismatch
from voxssl.data.volume import Volume
from voxssl.errors import DataError

log = logging.getLogger(__name__)

#: Bump when the algorithm changes in a way that changes the cached arrays (invalidates caches).
PREPROCESS_VERSION = 1


def preprocess_volume(
    volume: Volume,
    modality: str,
    cfg: PreprocessConfig,
    label: np.ndarray | Callable[[], np.ndarray | None] | None = None,
    release_source: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, dict[str, Any]]:
    """Preprocess a scan in memory (used by the cache pipeline and by ``voxssl predict``).

    Args:
        volume: a RAS volume from :func:`voxssl.data.readers.read_volume`.
        modality: ``ct`` or ``mr``.
        cfg: the recipe's ``preprocess`` section.
        label: canonical-id uint8 label on ``volume``'s RAS grid, or None; or a function that
            reads it, called once the image is resampled (so both never sit in memory together).
        release_source: free ``volume.data`` as soon as the image is resampled (the volume keeps
            its shape and geometry, not its voxels). Keeps the peak memory of the cache pipeline
            below 4x the raw scan.

    Returns:
        ``(image, label, body_mask, meta)``: image float32 in [0, 1], (X, Y, Z) or (C, X, Y, Z);
        label uint8 or None; body mask bool (X, Y, Z); meta (JSON types) with the geometry
        (``spacing``, ``shape``, ``affine``, ``original_affine``, ``original_shape``,
        ``orientation``, ``ratio``, ``resampled_shape``, ``crop_box``), the ``intensity``
        mapping and the ``preprocess`` parameters.
    """
    params = cfg.for_modality(modality)
    mismatch = modality_mismatch(volume.data, modality)
    if (
        mismatch
    ):  # a warning, not an error: the user decides (cache pipeline, predict, probes alike)
        log.warning(
            "%s does not look like %s, the modality it is preprocessed as: %s",
            volume.path,
            modality.upper(),
            mismatch,
        )
    if isinstance(label, np.ndarray):
        _check_label_shape(label, volume)
    data = volume.data
    intensity = intensity_mapping(data, params)
    source_spacing = np.asarray(volume.spacing, dtype=np.float64)
    ratio = np.asarray(params.spacing, dtype=np.float64) / source_spacing
    full_shape = geometry.resampled_shape(volume.spatial_shape, ratio)

    source_lo, source_hi = foreground_box(data, _raw_crop_threshold(params, intensity), volume)
    box = geometry.crop_box_for_source_box(source_lo, source_hi, ratio, full_shape)
    positions = geometry.source_positions(box, ratio)

    image = geometry.resample_linear(data, positions)
    del data
    if release_source:  # keep the shape (a zero-stride view), free the voxels
        volume.data = np.broadcast_to(np.zeros((), volume.data.dtype), volume.data.shape)
    apply_intensity_mapping(image, intensity)
    if callable(label):
        label = label()
        if label is not None:
            _check_label_shape(label, volume)
    resampled_label = geometry.resample_nearest(label, positions) if label is not None else None
    del label
    body = compute_body_mask(image, _scaled_body_threshold(params, intensity))

    meta = {
        "modality": modality,
        "spacing": [float(t) for t in params.spacing],
        "shape": [int(n) for n in image.shape[-3:]],
        "num_channels": 1 if image.ndim == 3 else int(image.shape[0]),
        "affine": geometry.cached_affine(volume.affine, box, ratio).tolist(),
        "original_affine": np.asarray(volume.original_affine, dtype=np.float64).tolist(),
        "original_shape": [int(n) for n in volume.original_shape],
        "orientation": np.asarray(volume.orientation).tolist(),
        "source_spacing": source_spacing.tolist(),
        "ratio": ratio.tolist(),
        "resampled_shape": list(full_shape),
        "crop_box": box.tolist(),
        "intensity": intensity,
        "preprocess": preprocess_params(params, modality),
    }
    return image, resampled_label, body, meta


def _check_label_shape(label: np.ndarray, volume: Volume) -> None:
    if tuple(label.shape) != volume.spatial_shape:
        raise DataError(
            f"{volume.path}: label shape {label.shape} differs from the image's {volume.spatial_shape}"
        )


def preprocess_params(
    params: CTPreprocessConfig | MRPreprocessConfig, modality: str
) -> dict[str, Any]:
    """The parameters that determine the cached arrays (hashed to detect stale cache entries)."""
    return {"modality": modality, "version": PREPROCESS_VERSION, **_jsonable(asdict(params))}


def intensity_mapping(
    data: np.ndarray, params: CTPreprocessConfig | MRPreprocessConfig
) -> dict[str, Any]:
    """Per channel ``low``/``high`` raw values mapped to 0 and 1 (clipped outside)."""
    if isinstance(params, CTPreprocessConfig):
        low, high = params.window_hu
        if not high > low:
            raise DataError(f"preprocess.ct.window_hu must be increasing, got {params.window_hu}")
        return {"kind": "ct_window", "low": [float(low)], "high": [float(high)]}
    channels = data if data.ndim == 4 else data[None]
    lows, highs = [], []
    for channel in channels:
        low, high = np.percentile(_subsample(channel), params.percentiles)
        if not high > low:
            high = low + 1.0  # a constant channel: maps to 0
        lows.append(float(low))
        highs.append(float(high))
    return {"kind": "mr_percentile", "low": lows, "high": highs}


def apply_intensity_mapping(image: np.ndarray, intensity: dict[str, Any]) -> None:
    """In place: ``(x - low) / (high - low)`` clipped to [0, 1], per channel."""
    channels = image if image.ndim == 4 else image[None]
    for channel, low, high in zip(channels, intensity["low"], intensity["high"], strict=True):
        channel -= low
        channel *= 1.0 / (high - low)
        np.clip(channel, 0.0, 1.0, out=channel)


def invert_intensity_mapping(image: np.ndarray, intensity: dict[str, Any]) -> np.ndarray:
    """Scaled [0, 1] values back to raw units (HU for CT); clipped values stay at the window ends."""
    low = np.asarray(intensity["low"], dtype=np.float32)
    high = np.asarray(intensity["high"], dtype=np.float32)
    if image.ndim == 4:
        low, high = low[:, None, None, None], high[:, None, None, None]
    else:
        low, high = low[0], high[0]
    return np.asarray(image, dtype=np.float32) * (high - low) + low


def foreground_box(
    data: np.ndarray, thresholds: list[float], volume: Volume
) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive source-voxel box of the voxels above the threshold (in any channel)."""
    channels = data if data.ndim == 4 else data[None]
    in_plane = np.zeros(channels.shape[1:3], dtype=bool)
    along_z = np.zeros(channels.shape[3], dtype=bool)
    slab = 16  # slices per step: bounds the temporary boolean mask
    for channel, threshold in zip(channels, thresholds, strict=True):
        for start in range(0, channel.shape[2], slab):
            above = channel[:, :, start : start + slab] > threshold
            in_plane |= above.any(axis=2)
            along_z[start : start + slab] |= above.any(axis=(0, 1))
    if not along_z.any():
        raise DataError(
            f"{volume.path}: no voxel above the crop threshold {thresholds}; is the modality right "
            "(CT must be in HU) and the image not empty?"
        )
    projections = [in_plane.any(axis=1), in_plane.any(axis=0), along_z]
    lo = np.array([np.flatnonzero(p)[0] for p in projections])
    hi = np.array([np.flatnonzero(p)[-1] for p in projections])
    return lo, hi


def _raw_crop_threshold(params, intensity: dict[str, Any]) -> list[float]:
    if isinstance(params, CTPreprocessConfig):
        return [float(params.crop_threshold_hu)]
    return [
        low + params.crop_threshold * (high - low)
        for low, high in zip(intensity["low"], intensity["high"], strict=True)
    ]


def _scaled_body_threshold(params, intensity: dict[str, Any]) -> float:
    if isinstance(params, CTPreprocessConfig):
        low, high = intensity["low"][0], intensity["high"][0]
        return (params.body_threshold_hu - low) / (high - low)
    return float(params.body_threshold)


def _subsample(channel: np.ndarray, max_voxels: int = 4_000_000) -> np.ndarray:
    """A regular subsample for percentiles of large volumes (sorting 40 M voxels costs seconds)."""
    step = int(np.ceil((channel.size / max_voxels) ** (1 / 3)))
    return channel[::step, ::step, ::step].ravel() if step > 1 else channel.ravel()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


__all__ = [
    "PREPROCESS_VERSION",
    "invert_intensity_mapping",
    "preprocess_params",
    "preprocess_volume",
]
