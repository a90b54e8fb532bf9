"""The cache format: memory-mapped arrays, the manifest, filters and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxssl.data.cache import (
    case_files_present,
    open_cache,
    read_manifest,
    remove_temporaries,
    write_case,
    write_manifest,
)
from voxssl.errors import DataError


def _meta(source, case_id, shape, modality="ct"):
    return {
        "case_id": case_id,
        "source": source,
        "modality": modality,
        "directory": f"{source}/{case_id}",
        "spacing": [1.0, 1.0, 2.0],
        "shape": list(shape),
        "num_channels": 1,
        "annotated": None,
    }


def _fill(cache_dir):
    rng = np.random.default_rng(0)
    manifest = read_manifest(cache_dir)
    for source, case_id, labelled in [
        ("btcv", "img0001", True),
        ("btcv", "img0002", False),
        ("flare", "c7", True),
    ]:
        shape = (6, 5, 4)
        image = rng.uniform(size=shape).astype(np.float32)
        label = rng.integers(0, 14, size=shape).astype(np.uint8) if labelled else None
        meta = write_case(
            cache_dir / source / case_id, image, label, image > 0.2, _meta(source, case_id, shape)
        )
        manifest["cases"][f"{source}/{case_id}"] = meta
    write_manifest(cache_dir, manifest)


def test_open_cache_lists_cases_and_memory_maps_arrays(tmp_path):
    _fill(tmp_path)
    index = open_cache(tmp_path)
    assert len(index) == 3 and index.sources == ["btcv", "flare"]
    assert [c.case_id for c in index.cases(source="btcv")] == ["img0001", "img0002"]
    assert [c.key for c in index.cases(labelled=True)] == ["btcv/img0001", "flare/c7"]
    assert [c.key for c in index.cases(labelled=False)] == ["btcv/img0002"]
    case = index.case("btcv", "img0001")
    image, label, body = case.image(), case.label(), case.body_mask()
    assert isinstance(image, np.memmap) and image.dtype == np.float16 and image.shape == (6, 5, 4)
    assert label.dtype == np.uint8 and body.dtype == np.bool_
    assert not image.flags.writeable
    assert case.spacing == (1.0, 1.0, 2.0) and case.modality == "ct" and case.annotated is None
    assert index.case("btcv", "img0002").label() is None
    assert (
        json.loads((case.directory / "meta.json").read_text(encoding="utf-8"))["files"]["label"]
        == "label.npy"
    )


def test_missing_or_empty_cache_says_to_run_preprocess(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*voxssl preprocess"):
        open_cache(tmp_path / "absent")
    with pytest.raises(DataError, match=r"no preprocessed case.*voxssl preprocess"):
        open_cache(tmp_path)


def test_unknown_source_and_case_are_errors(tmp_path):
    _fill(tmp_path)
    index = open_cache(tmp_path)
    with pytest.raises(DataError, match=r"no source 'amos'.*btcv, flare"):
        index.cases(source="amos")
    with pytest.raises(DataError, match="no case 'btcv/nope'"):
        index.case("btcv", "nope")


def test_missing_array_file_is_a_clear_error(tmp_path):
    _fill(tmp_path)
    case = open_cache(tmp_path).case("flare", "c7")
    (case.directory / "image.npy").unlink()
    assert not case_files_present(tmp_path, case.meta)
    with pytest.raises(DataError, match=r"image\.npy is missing or corrupt"):
        case.image()


def test_case_files_present_checks_the_header_shape(tmp_path):
    _fill(tmp_path)
    case = open_cache(tmp_path).case("flare", "c7")
    assert case_files_present(tmp_path, case.meta)
    np.save(case.directory / "label.npy", np.zeros((3, 3, 3), np.uint8))
    assert not case_files_present(tmp_path, case.meta)


def test_rewriting_a_case_without_label_removes_the_stale_label_and_temporaries(tmp_path):
    _fill(tmp_path)
    case_dir = tmp_path / "flare" / "c7"
    (case_dir / ".tmp-image-abc.npy").write_bytes(b"partial")
    meta = write_case(
        case_dir,
        np.zeros((2, 2, 2), np.float32),
        None,
        np.ones((2, 2, 2), bool),
        _meta("flare", "c7", (2, 2, 2)),
    )
    assert meta["files"]["label"] is None
    assert not (case_dir / "label.npy").exists()
    assert not list(case_dir.glob(".tmp-*"))
    assert remove_temporaries(case_dir) == 0


def test_manifest_of_another_format_version_is_rejected(tmp_path):
    (tmp_path / "manifest.json").write_text(
        json.dumps({"format_version": 99, "cases": {}}), encoding="utf-8"
    )
    with pytest.raises(DataError, match="format version 99"):
        open_cache(tmp_path)
