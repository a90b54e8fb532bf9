"""Predictions go back to the scan's own grid exactly (anisotropic, non-RAS inputs)."""

import nibabel as nib
import numpy as np
import pytest

from voxssl.config.data import CTPreprocessConfig, PreprocessConfig
from voxssl.data.preprocess import preprocess_volume
from voxssl.data.readers import read_volume
from voxssl.eval.inference import label_in_original_geometry, write_label_nifti

SPACING = (0.8, 1.1, 2.5)  # of the stored array axes
# stored axis -> (RAS world axis, sign): LPS (diagonal) and a permuted LAI-like "P I L" layout
ORIENTATIONS = {
    "LPS": [(0, -1), (1, -1), (2, 1)],
    "LAI": [(0, -1), (1, 1), (2, -1)],
    "PIL": [(1, -1), (2, -1), (0, -1)],
}
CLASSES = [1, 6, 11]


def _affine(orientation):
    affine = np.eye(4)
    affine[:3, :3] = 0
    for axis, (world, sign) in enumerate(orientation):
        affine[world, axis] = sign * SPACING[axis]
    affine[:3, 3] = (12.0, -40.0, 7.5)
    return affine


def _scan(tmp_path, name):
    shape = (26, 22, 14)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    body = (grid[0] ** 2 / 0.8 + grid[1] ** 2 / 0.7) < 1
    image = np.where(body, 40.0, -1000.0).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[6:12, 5:10, 3:9] = 1
    label[13:19, 11:15, 4:12] = 6
    label[10:12, 14:16, 6:8] = 11  # a tiny organ: two voxels thin
    label[~body] = 0
    affine = _affine(ORIENTATIONS[name])
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / f"{name}.nii.gz"))
    return tmp_path / f"{name}.nii.gz", label, affine


def _ras_label(volume, label):
    """The stored label reoriented like the reader reoriented the image."""
    ornt = nib.orientations.io_orientation(volume.original_affine)
    return np.ascontiguousarray(nib.orientations.apply_orientation(label, ornt))


def _one_hot_probabilities(cached_label, kind):
    channels = [(cached_label == c).astype(np.float32) for c in CLASSES]
    if kind == "ce":
        channels.insert(0, (cached_label == 0).astype(np.float32))
    return np.stack(channels)


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
@pytest.mark.parametrize("kind", ["bce", "ce"])
def test_prediction_equal_to_preprocessed_label_maps_back_exactly(tmp_path, name, kind):
    path, label, affine = _scan(tmp_path, name)
    volume = read_volume(path)
    assert not np.allclose(volume.affine, volume.original_affine)  # really reoriented
    cfg = PreprocessConfig(
        ct=CTPreprocessConfig(spacing=(0.5, 0.5, 1.0))
    )  # finer than the scan: nearest is exact
    _, cached_label, _, meta = preprocess_volume(volume, "ct", cfg, label=_ras_label(volume, label))
    probs = _one_hot_probabilities(cached_label, kind)

    back, back_affine = label_in_original_geometry(
        probs, meta, CLASSES, kind, interpolation="nearest"
    )
    assert back.shape == label.shape
    np.testing.assert_array_equal(back, label)
    np.testing.assert_allclose(back_affine, affine)

    # linear probabilities: exact where the target spacing equals the scan's, close otherwise
    linear, _ = label_in_original_geometry(probs, meta, CLASSES, kind, interpolation="linear")
    assert (linear == label).mean() > 0.97
    same_spacing = PreprocessConfig(ct=CTPreprocessConfig(spacing=tuple(volume.spacing)))
    _, cached_same, _, meta_same = preprocess_volume(
        volume, "ct", same_spacing, label=_ras_label(volume, label)
    )
    linear_same, _ = label_in_original_geometry(
        _one_hot_probabilities(cached_same, kind), meta_same, CLASSES, kind, interpolation="linear"
    )
    np.testing.assert_array_equal(linear_same, label)

    # written with the original affine: it overlays the source scan voxel for voxel
    written = nib.load(str(write_label_nifti(tmp_path / "pred.nii.gz", back, back_affine)))
    source = nib.load(str(path))
    np.testing.assert_allclose(written.affine, source.affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj), label)
    assert written.shape == source.shape
