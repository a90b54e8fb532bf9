"""The canonical organ vocabulary every adapter maps its label ids into.

Ids 1-13 are BTCV's; 14-16 are AMOS's organs that BTCV lacks. 17-19 are voxssl's own ids for the
structures the phantom generator draws that no public abdominal benchmark labels (they never occur
in real data sets' maps, so real-data results are unaffected).
"""

from __future__ import annotations

BACKGROUND = 0

ORGANS: dict[int, str] = {
    1: "spleen",
    2: "right_kidney",
    3: "left_kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior_vena_cava",
    10: "portal_splenic_vein",
    11: "pancreas",
    12: "right_adrenal_gland",
    13: "left_adrenal_gland",
    14: "duodenum",
    15: "bladder",
    16: "prostate_uterus",
    17: "vertebrae",
    18: "body_wall_muscle",
    19: "fat",
}

ORGAN_IDS: dict[str, int] = {name: idx for idx, name in ORGANS.items()}

#: Ignore value for voxels whose class is unknown (partial labels, outside the annotated region).
IGNORE_INDEX = 255


def organ_name(organ_id: int) -> str:
    return "background" if organ_id == BACKGROUND else ORGANS[organ_id]


def organ_id(name: str) -> int:
    """Canonical id of an organ name (``liver``, ``right_kidney`` ...)."""
    key = name.strip().lower().replace(" ", "_").replace("-", "_")
    if key not in ORGAN_IDS:
        raise KeyError(f"unknown organ {name!r}; known: {', '.join(ORGAN_IDS)}")
    return ORGAN_IDS[key]


def is_known(organ_id: int) -> bool:
    return organ_id == BACKGROUND or organ_id in ORGANS
