"""Writing phantoms as NIfTI files and as a small nnU-Net-style data set folder.

Files are deliberately stored the way real scans arrive: integer HU for CT, anisotropic voxels, a
scanner-like origin and, unless asked otherwise, a per-case orientation drawn from the common ones
(DICOM-derived LPS, RAS, dcm2niix-style LAS, slice order reversed LPI) so that every consumer has to
reorient through the affine instead of trusting the array order.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm.auto import tqdm

from voxssl.data.phantoms.anatomy import PHANTOM_ORGANS
from voxssl.data.phantoms.generate import (
    Modality,
    Phantom,
    check_seed,
    generate_phantom,
    resolve_grid,
)
from voxssl.data.phantoms.landmarks import landmarks_document
from voxssl.errors import ConfigError
from voxssl.utils.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

#: Orientations a data set draws from when none is given (axis codes of the stored array).
ORIENTATIONS: tuple[str, ...] = ("LPS", "RAS", "LAS", "LPI")
#: Version of the generator's output; bump when the same seed would give different phantoms.
GENERATOR_VERSION = "1"
FILE_ENDING = ".nii.gz"


def case_name(modality: str, index: int) -> str:
    """``phantom_ct_00007``: five digits, because a name ending in ``_`` + four digits reads as an
    nnU-Net channel suffix (``case_0000``, ``case_0001`` = two channels of one case) to folder
    readers, which would merge consecutive phantoms into one multi-channel case."""
    return f"phantom_{modality}_{index:05d}"


def case_seeds(seed: int, index: int) -> tuple[int, int]:
    """(phantom seed, orientation draw) of case ``index``: independent streams via SeedSequence."""
    phantom_seed, orientation_draw = np.random.SeedSequence(
        seed, spawn_key=(index,)
    ).generate_state(2)
    return int(phantom_seed), int(orientation_draw)


def reorient(array: np.ndarray, affine: np.ndarray, axcodes: str) -> tuple[np.ndarray, np.ndarray]:
    """Re-store an RAS-ordered ``array`` so its axes follow ``axcodes``; returns (array, affine).

    The world position of every voxel is unchanged: only the storage order and the affine change.
    """
    axcodes = axcodes.upper()
    try:
        target = nib.orientations.axcodes2ornt(tuple(axcodes))
    except Exception as err:  # nibabel raises ValueError / KeyError for malformed codes
        raise ConfigError(
            f"orientation must be three axis codes like 'LPS' or 'RAS', got {axcodes!r}"
        ) from err
    if len(axcodes) != 3 or np.isnan(target).any() or sorted(target[:, 0]) != [0, 1, 2]:
        raise ConfigError(
            f"orientation must be three axis codes like 'LPS' or 'RAS', got {axcodes!r}"
        )
    current = nib.orientations.io_orientation(affine)
    transform = nib.orientations.ornt_transform(current, target)
    stored = nib.orientations.apply_orientation(array, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, array.shape)
    return np.ascontiguousarray(stored), new_affine


def _nifti(array: np.ndarray, affine: np.ndarray, description: str) -> nib.Nifti1Image:
    image = nib.Nifti1Image(array, affine)
    image.set_sform(affine, code=1)  # scanner coordinates, as written by DICOM converters
    image.set_qform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header["descrip"] = description[:79].encode()
    return image


def image_array(phantom: Phantom) -> np.ndarray:
    """The stored image: CT as int16 HU, MR as int16 scanner units (like most DICOM-derived NIfTI)."""
    return np.clip(np.rint(phantom.image), -32768, 32767).astype(np.int16)


def write_phantom(
    phantom: Phantom,
    image_path: str | Path,
    label_path: str | Path,
    orientation: str = "RAS",
    landmarks_path: str | Path | None = None,
) -> None:
    """Write one phantom's image and label (same grid) atomically, stored in ``orientation``;
    with ``landmarks_path`` also its landmarks as JSON (world mm and stored-voxel coordinates)."""
    description = f"voxssl phantom {phantom.modality} seed={phantom.seed}"
    for path, array in (
        (image_path, image_array(phantom)),
        (label_path, phantom.label.astype(np.uint8)),
    ):
        stored, affine = reorient(array, phantom.affine, orientation)
        with atomic_path(path) as tmp:
            nib.save(_nifti(stored, affine, description), tmp)
    if landmarks_path is not None:
        document = landmarks_document(
            phantom.landmarks,
            stored_affine=affine,
            image=Path(image_path).name,
            seed=phantom.seed,
            modality=phantom.modality,
        )
        atomic_write_text(landmarks_path, json.dumps(document, indent=1) + "\n")


def _check_folder(out_dir: Path, modality: str) -> None:
    existing = out_dir / "dataset.json"
    if not existing.is_file():
        return
    try:
        previous = json.loads(existing.read_text(encoding="utf-8")).get("modality")
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{existing} exists but is not readable JSON; remove it or choose another folder"
        ) from err
    if previous is not None and previous != modality:
        raise ConfigError(
            f"{out_dir} already holds a {previous} phantom data set ({existing}); "
            f"write {modality} phantoms to another folder"
        )


def _existing_entries(out_dir: Path, generator: dict) -> dict[str, dict]:
    """File name -> dataset.json entry of the phantoms already written with these settings."""
    try:
        earlier = json.loads((out_dir / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if earlier.get("generator") != generator:
        return {}
    return {
        Path(entry["image"]).name: entry
        for entry in earlier.get("training", [])
        if isinstance(entry, dict) and "image" in entry
    }


def _remove_stale(out_dir: Path, modality: str, n: int) -> None:
    """Delete phantom files of an earlier, larger run so the folder matches dataset.json."""
    pattern = re.compile(rf"phantom_{modality}_(\d{{5,}})\.(nii\.gz|json)$")
    for folder in (out_dir / "images", out_dir / "labels", out_dir / "landmarks"):
        for path in folder.glob(f"phantom_{modality}_*.*"):
            match = pattern.fullmatch(path.name)
            if match and int(match.group(1)) >= n:
                logger.info("removing %s (left over from a larger earlier run)", path)
                path.unlink()


def write_phantom_dataset(
    out_dir: str | Path,
    n: int,
    modality: Modality = "ct",
    seed: int = 0,
    shape=None,
    spacing=None,
    orientation: str | None = None,
    progress: bool = True,
) -> list[Path]:
    """Generate ``n`` phantoms into ``out_dir``; returns the image paths.

    Layout: ``images/phantom_<modality>_<NNNNN>.nii.gz``, ``labels/<same name>`` (uint8, canonical
    organ ids), ``landmarks/phantom_<modality>_<NNNNN>.json`` (named anatomical points, see
    :mod:`voxssl.data.phantoms.landmarks`) and ``dataset.json`` (nnU-Net v2 keys ``channel_names``, ``labels``, ``numTraining``,
    ``file_ending``, plus a ``training`` list and the generator settings). Case ``i`` depends only
    on ``(seed, i)`` and the grid, so re-running gives byte-identical files and a larger ``n``
    extends a data set without changing its first cases. ``orientation`` None draws one of
    :data:`ORIENTATIONS` per case.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"number of phantoms (n) must be an integer >= 1, got {n!r}")
    if modality not in ("ct", "mr"):
        raise ConfigError(f"phantom modality must be 'ct' or 'mr', got {modality!r}")
    check_seed(seed)
    if orientation is not None:
        reorient(np.zeros((1, 1, 1), np.uint8), np.eye(4), orientation)  # validate before any work
    shape, spacing = resolve_grid(shape, spacing)
    out_dir = Path(out_dir)
    _check_folder(out_dir, modality)
    generator = {
        "version": GENERATOR_VERSION,
        "seed": seed,
        "shape": list(shape),
        "spacing": [float(s) for s in spacing],
        "orientation": orientation or "per case",
    }
    existing = _existing_entries(out_dir, generator)

    entries, images, reused = [], [], 0
    for index in tqdm(
        range(n), desc=f"phantoms ({modality})", unit="case", disable=not progress or n < 2
    ):
        name = case_name(modality, index) + FILE_ENDING
        image_path, label_path = out_dir / "images" / name, out_dir / "labels" / name
        landmarks_path = out_dir / "landmarks" / (case_name(modality, index) + ".json")
        if name in existing and all(p.is_file() for p in (image_path, label_path, landmarks_path)):
            # same generator settings: the files would be rewritten byte for byte
            entries.append(existing[name])
            images.append(image_path)
            reused += 1
            continue
        phantom_seed, orientation_draw = case_seeds(seed, index)
        axcodes = orientation or ORIENTATIONS[orientation_draw % len(ORIENTATIONS)]
        phantom = generate_phantom(phantom_seed, modality, shape, spacing)
        write_phantom(phantom, image_path, label_path, axcodes, landmarks_path)
        images.append(image_path)
        params = {
            k: (round(v, 4) if isinstance(v, float) else v) for k, v in phantom.params.items()
        }
        entries.append(
            {
                "image": f"./images/{name}",
                "label": f"./labels/{name}",
                "seed": phantom_seed,
                "orientation": axcodes,
                "params": params,
            }
        )
    _remove_stale(out_dir, modality, n)
    if reused:
        logger.info("%d of %d phantoms were already in %s (same settings)", reused, n, out_dir)

    description = {
        "name": f"voxssl_phantoms_{modality}",
        "description": "Procedural abdominal phantoms generated by voxssl (synthetic; not patient data).",
        "channel_names": {"0": "CT" if modality == "ct" else "MR"},
        "labels": {
            "background": 0,
            **{name: organ for organ, name in sorted(PHANTOM_ORGANS.items())},
        },
        "numTraining": n,
        "file_ending": FILE_ENDING,
        "modality": modality,
        "label_ids": "canonical voxssl vocabulary ids (voxssl.vocabulary), not consecutive",
        "generator": generator,
        "training": entries,
    }
    text = json.dumps(description, indent=2) + "\n"
    dataset_json = out_dir / "dataset.json"
    if not (dataset_json.is_file() and dataset_json.read_text(encoding="utf-8") == text):
        atomic_write_text(dataset_json, text)
    logger.info("wrote %d %s phantoms to %s", n, modality, out_dir)
    return images
