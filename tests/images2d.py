"""Small 2D images on disk in every supported format (8/16-bit PNG, JPEG, DICOM)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def disc_image(seed: int, shape=(48, 40), bright: bool = False) -> np.ndarray:
    """A noisy grey background with a disc (bright discs for one class, dark for the other)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(12, shape[0] - 12), rng.uniform(12, shape[1] - 12)
    radius = rng.uniform(5, 9)
    image = 0.35 + 0.08 * rng.standard_normal(shape)
    inside = (rows - cy) ** 2 + (cols - cx) ** 2 < radius**2
    image[inside] = 0.85 if bright else 0.1
    return np.clip(image, 0, 1)


def write_image(path: Path, image: np.ndarray) -> Path:
    """``image`` in [0, 1] written in the format of ``path``'s suffix (``.png16`` = 16-bit PNG)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".png16":
        path = path.with_suffix(".png")
        Image.fromarray((image * 40000 + 1000).astype(np.uint16)).save(path)
    elif path.suffix == ".dcm":
        import SimpleITK as sitk

        dicom = sitk.GetImageFromArray((image * 1000 - 500).astype(np.int16))
        dicom.SetMetaData("0008|0060", "MR")
        sitk.WriteImage(dicom, str(path))
    else:
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return path


def write_class_folder(root: Path, per_class: int = 6) -> Path:
    """``root/bright/`` and ``root/dark/`` images, the formats mixed within each class."""
    suffixes = (".png", ".jpg", ".png16", ".dcm")
    for label, name in enumerate(("dark", "bright")):
        for index in range(per_class):
            image = disc_image(100 * label + index, bright=bool(label))
            write_image(root / name / f"img{index:02d}{suffixes[index % len(suffixes)]}", image)
    return root
