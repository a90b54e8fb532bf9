"""Organ names as data sets spell them, matched to the canonical vocabulary.

``dataset.json`` files name their labels freely: AMOS ships the typos ``arota`` and ``postcava``,
BTCV's MONAI json uses ``rkid``/``lkid``, TotalSegmentator writes ``kidney_left``. A name is
normalised (lower case, separators to ``_``) and looked up in the vocabulary, then in the synonyms.
Names of structures outside the vocabulary (tumours, vessels other than BTCV's) match nothing.
"""

from __future__ import annotations

import re

from voxssl.vocabulary import ORGAN_IDS

SYNONYMS: dict[str, str] = {
    # spleen / kidneys
    "kidney_right": "right_kidney",
    "rkid": "right_kidney",
    "r_kidney": "right_kidney",
    "kidney_r": "right_kidney",
    "kidney_left": "left_kidney",
    "lkid": "left_kidney",
    "l_kidney": "left_kidney",
    "kidney_l": "left_kidney",
    # gallbladder
    "gall_bladder": "gallbladder",
    "gall": "gallbladder",
    # esophagus / stomach
    "eso": "esophagus",
    "oesophagus": "esophagus",
    "sto": "stomach",
    # vessels
    "arota": "aorta",
    "postcava": "inferior_vena_cava",
    "ivc": "inferior_vena_cava",
    "vena_cava_inferior": "inferior_vena_cava",
    "inferior_vena_cava_ivc": "inferior_vena_cava",
    "veins": "portal_splenic_vein",
    "portal_vein_and_splenic_vein": "portal_splenic_vein",
    "portal_vein_splenic_vein": "portal_splenic_vein",
    "portal_and_splenic_vein": "portal_splenic_vein",
    "portal_vein_&_splenic_vein": "portal_splenic_vein",
    # adrenals
    "right_adrenal": "right_adrenal_gland",
    "adrenal_gland_right": "right_adrenal_gland",
    "rad": "right_adrenal_gland",
    "left_adrenal": "left_adrenal_gland",
    "adrenal_gland_left": "left_adrenal_gland",
    "lad": "left_adrenal_gland",
    "rag": "right_adrenal_gland",
    "lag": "left_adrenal_gland",
    # pelvis
    "urinary_bladder": "bladder",
    "prostate/uterus": "prostate_uterus",
    "prostate_or_uterus": "prostate_uterus",
    "prostate_and_uterus": "prostate_uterus",
}


def normalise(name: str) -> str:
    """``Right Kidney`` -> ``right_kidney``; ``prostate/uterus`` -> ``prostate_uterus``."""
    text = name.strip().lower()
    text = re.sub(
        r"\s*\(.*?\)\s*", " ", text
    ).strip()  # "inferior vena cava (IVC)" -> drop the note
    text = re.sub(r"[\s\-/]+", "_", text)
    return text


def canonical_id_of_name(name: str) -> int | None:
    """The canonical id of an organ name or a known synonym; None for anything else."""
    raw = name.strip().lower()
    if raw in SYNONYMS:
        return ORGAN_IDS[SYNONYMS[raw]]
    key = normalise(name)
    key = SYNONYMS.get(key, key)
    return ORGAN_IDS.get(key)
