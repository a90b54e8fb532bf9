"""Superpixels: every Felzenszwalb segment kept (segment 0 too), body-only, cached and resumable."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from voxssl.fewshot.superpixels import (
    SuperpixelParams,
    SuperpixelStore,
    build_superpixels,
    clean_body_mask,
    slice_superpixels,
)

PARAMS = SuperpixelParams(scale=1.0, sigma=1.0, min_size=20, size=32)


@dataclass(frozen=True)
class FakeCase:
    case_id: str
    seed: int

    @property
    def key(self) -> str:
        return f"src/{self.case_id}"

    def image(self):
        rng = np.random.default_rng(self.seed)
        img = np.zeros((32, 32, 3), dtype=np.float32)
        img[4:28, 4:16] = 0.3
        img[4:28, 16:28] = 0.8
        return img + rng.normal(0, 0.01, img.shape).astype(np.float32)

    def body_mask(self):
        mask = np.zeros((32, 32, 3), dtype=bool)
        mask[2:30, 2:30] = True
        return mask


def test_segment_zero_is_kept_and_outside_is_zero():
    from skimage.segmentation import felzenszwalb

    img = np.zeros((32, 32), dtype=np.float32)
    img[:, 16:] = 1.0
    body = np.ones((32, 32), dtype=bool)
    raw = felzenszwalb(img, scale=1, sigma=1, min_size=20, channel_axis=None)
    assert (raw == 0).any()
    sp = slice_superpixels(img, body, PARAMS)
    n = len(np.unique(raw))
    assert set(np.unique(sp)) == set(range(1, n + 1))  # every segment survives, renumbered 1..n
    assert len(np.unique(sp[raw == 0])) == 1 and (sp[raw == 0] > 0).all()  # segment 0 included
    body[:, :4] = False
    sp = slice_superpixels(img, body, PARAMS)
    assert (sp[:, :4] == 0).all() and (sp[:, 4:] > 0).all()


def test_body_mask_keeps_largest_component_with_holes_filled():
    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5:8, 5:8] = False  # a hole
    mask[15:17, 15:17] = True  # a small separate blob
    clean = clean_body_mask(mask)
    assert clean[6, 6] and not clean[16, 16] and clean.sum() == 100


def test_store_caches_and_resumes(tmp_path):
    store = SuperpixelStore(tmp_path, PARAMS)
    cases = [FakeCase("a", 0), FakeCase("b", 1)]
    assert sorted(build_superpixels(cases, store)) == ["src/a", "src/b"]
    first = store.load("src/a")
    assert first.shape == (32, 32, 3) and first.max() >= 2
    assert build_superpixels(cases, store) == []  # nothing left to do
    store.path("src/b").unlink()  # an interrupted run lost one case
    store.path("src/a").write_bytes(b"truncated")  # and left a corrupt one
    assert sorted(build_superpixels(cases, store)) == ["src/a", "src/b"]
    np.testing.assert_array_equal(store.load("src/a"), first)
    assert not list(store.root.rglob(".tmp-*"))
    other = SuperpixelStore(
        tmp_path, SuperpixelParams(1.0, 1.0, 50, 32)
    )  # new parameters: new folder
    assert other.root != store.root and not other.has("src/a")


@pytest.mark.multiprocess
def test_parallel_workers_match_serial(tmp_path):
    serial = SuperpixelStore(tmp_path / "serial", PARAMS)
    parallel = SuperpixelStore(tmp_path / "parallel", PARAMS)
    cases = [FakeCase("a", 0), FakeCase("b", 1)]
    build_superpixels(cases, serial, num_workers=1)
    build_superpixels(cases, parallel, num_workers=2)
    for case in cases:
        np.testing.assert_array_equal(serial.load(case.key), parallel.load(case.key))
