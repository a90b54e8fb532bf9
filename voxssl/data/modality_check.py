"""Cheap plausibility checks of a scan: its intensities against the modality it is processed as,
and whether it is a label map put among the scans.

CT weights applied to an MR scan (or to a CT whose stored values were never rescaled to Hounsfield
units) run without any error and return confident nonsense: the HU window maps the whole scan to
one end of [0, 1]. A CT body scan in HU always holds air (about -1000 HU) around or inside the
body, while MR magnitudes are non-negative; that is enough to catch the common mix-ups.
"""

from __future__ import annotations

import numpy as np

#: A CT in Hounsfield units has voxels at or below this value (air is about -1000 HU).
CT_AIR_HU = -500.0


def modality_mismatch(data: np.ndarray, modality: str) -> str | None:
    """Why ``data`` does not look like a ``modality`` scan, or None when it plausibly does."""
    lowest = float(np.min(data))
    if modality == "ct" and lowest > CT_AIR_HU:
        return (
            f"its lowest value is {lowest:g}, a CT in Hounsfield units holds air near -1000; is it an MR, "
            "or a CT whose stored values were not rescaled to HU?"
        )
    if modality == "mr" and lowest <= CT_AIR_HU:
        return f"its lowest value is {lowest:g}, as in a CT in Hounsfield units; MR intensities are not negative"
    return None


#: A label map has at most this many distinct values (a scan has hundreds or thousands).
LABEL_MAP_MAX_VALUES = 64


def label_map_suspicion(data: np.ndarray) -> str | None:
    """Why ``data`` looks like a label map rather than a scan, or None.

    A label map holds a few non-negative integers (0 = background, organ ids); a CT, even a
    stored-as-int16 one, holds negative HU and hundreds of values, an MR hundreds of grey levels.
    Float arrays count when every value is an integer (label maps saved as float32).
    """
    sample = data[..., ::2, ::2, :] if data.ndim >= 3 and data.size > 2_000_000 else data
    if sample.dtype.kind == "f":
        if not np.all(np.isfinite(sample)) or np.any(sample != np.round(sample)):
            return None
    elif sample.dtype.kind not in "iub":
        return None
    low, high = float(np.min(sample)), float(np.max(sample))
    if low < 0 or high > 65535:
        return None
    values = np.unique(sample)
    if len(values) > LABEL_MAP_MAX_VALUES:
        return None
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
    return f"it holds only {len(values)} distinct integer values ({shown}), as a label map does"


__all__ = ["CT_AIR_HU", "LABEL_MAP_MAX_VALUES", "label_map_suspicion", "modality_mismatch"]
