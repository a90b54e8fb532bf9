"""A cheap plausibility check of a scan's intensities against the modality its model expects.

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


__all__ = ["CT_AIR_HU", "modality_mismatch"]
