"""Reading 2D images (PNG, JPEG, 16-bit PNG, DICOM), class folders, and slice labels of the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxssl.errors import DataError


def test_every_format_reads_as_grey_in_unit_range(tmp_path, images2d):
    from voxssl.data.image_folder import read_image_2d

    image = images2d.disc_image(0)
    for suffix in (".png", ".jpg", ".png16", ".dcm"):
        path = images2d.write_image(tmp_path / f"{suffix[1:]}{suffix}", image)
        read = read_image_2d(path)
        assert read.shape == image.shape and read.dtype == np.float32
        assert read.min() >= 0.0 and read.max() <= 1.0
        # bright disc, dark background, whatever the format's scaling
        assert np.corrcoef(read.ravel(), image.ravel())[0, 1] > 0.9, suffix  # JPEG: lossy
    # an 8-bit PNG is value / 255 (the writer truncated image * 255)
    np.testing.assert_allclose(read_image_2d(tmp_path / "png.png"), image, atol=1 / 255 + 1e-6)


def test_dicom_pixels_and_window(tmp_path):
    import SimpleITK as sitk

    from voxssl.data.image_folder import read_image_2d
    from voxssl.data.readers import read_dicom_image

    pixels = np.arange(64, dtype=np.int16).reshape(8, 8) * 10  # 0 ... 630
    dicom = sitk.GetImageFromArray(pixels)
    dicom.SetMetaData("0028|1050", "300")  # window centre / width: [200, 400]
    dicom.SetMetaData("0028|1051", "200")
    sitk.WriteImage(dicom, str(tmp_path / "w.dcm"))
    raw, window = read_dicom_image(tmp_path / "w.dcm")
    np.testing.assert_array_equal(raw, pixels)
    assert window == (300.0, 200.0)
    scaled = read_image_2d(tmp_path / "w.dcm")
    np.testing.assert_allclose(scaled, np.clip((pixels - 200) / 200, 0, 1), atol=1e-6)


def test_unreadable_files_and_missing_classes_are_named(tmp_path, images2d):
    from voxssl.data.image_folder import labelled_images, read_image_2d

    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"broken\.png"):
        read_image_2d(tmp_path / "broken.png")
    root = images2d.write_class_folder(tmp_path / "set", per_class=2)
    samples, names = labelled_images(root)
    assert names == ["bright", "dark"] and len(samples) == 4
    assert {s.key for s in samples} == {
        f"{c}/{p.name}" for c in names for p in (root / c).iterdir()
    }
    samples, names = labelled_images(root, ["dark", "bright"])  # the recipe fixes the order
    assert names == ["dark", "bright"] and {
        s.label for s in samples if s.key.startswith("bright")
    } == {1}
    with pytest.raises(DataError, match="tumour"):
        labelled_images(root, ["dark", "tumour"])


def test_slice_labels_follow_the_label_maps(phantom_slice_cache):
    from voxssl.classify.data import cache_data
    from voxssl.config.classify import ClassifyConfig, ClassifyDataConfig
    from voxssl.data.cache import open_cache

    cfg = ClassifyConfig(
        data=ClassifyDataConfig(organs=["liver"], min_pixels=5, min_body_fraction=0.0)
    )
    data = cache_data(phantom_slice_cache["cache_dir"], cfg)
    assert data.class_names == ["no_liver", "liver"]
    cases = {c.key: c for c in open_cache(phantom_slice_cache["cache_dir"]).cases()}
    for index in range(0, len(data), 7):
        case_key, z = data.keys[index].split("#z")
        label = np.asarray(cases[case_key].label())[:, :, int(z)]
        assert data.labels[index] == int((label == 6).sum() >= 5)
        assert data.groups[index] == case_key
        assert torch.equal(
            data.image(index),
            torch.from_numpy(np.asarray(cases[case_key].image()[:, :, int(z)], dtype=np.float32)),
        )
    assert 0 < data.labels.sum() < len(data)

    cfg = ClassifyConfig(data=ClassifyDataConfig(task="largest", organs=["spleen", "left_kidney"]))
    data = cache_data(phantom_slice_cache["cache_dir"], cfg)
    assert data.class_names == ["none", "spleen", "left_kidney"]
    for index in range(0, len(data), 5):
        case_key, z = data.keys[index].split("#z")
        label = np.asarray(cases[case_key].label())[:, :, int(z)]
        counts = [(label == 1).sum(), (label == 3).sum()]
        expected = 0 if max(counts) == 0 else 1 + int(np.argmax(counts))
        assert data.labels[index] == expected
    assert sorted(set(data.labels.tolist())) == [0, 1, 2]
