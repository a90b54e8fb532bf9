"""``voxssl preprocess``: skip / redo / resume, failures reported per case, no partial output, CLI exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from voxssl.config.recipe import load_recipe
from voxssl.data.cache import open_cache
from voxssl.data.pipeline import run_preprocess
from voxssl.errors import ConfigError, DataError

LPS = np.diag([-1.5, -1.5, 3.0, 1.0])


def write_case(root: Path, name: str, seed: int, label: bool = True) -> None:
    rng = np.random.default_rng(seed)
    image = np.full((24, 20, 8), -1000, np.int16)
    image[4:20, 3:17, 1:7] = rng.integers(-100, 200, size=(16, 14, 6))
    (root / "images").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, LPS), root / "images" / f"{name}.nii.gz")
    if label:
        (root / "labels").mkdir(parents=True, exist_ok=True)
        seg = np.zeros(image.shape, np.uint8)
        seg[6:12, 5:10, 2:5] = 6
        seg[13:18, 10:15, 3:6] = 1
        nib.save(nib.Nifti1Image(seg, LPS), root / "labels" / f"{name}.nii.gz")


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        write_case(root, f"case{i}", seed=i, label=i != 2)
    return root


def write_recipe(tmp_path: Path, root: Path, **preprocess) -> Path:
    recipe = {
        "name": "t",
        "data": {
            "cache_dir": str(tmp_path / "cache"),
            "num_workers": 1,
            "sources": [
                {
                    "adapter": "folder",
                    "name": "ph",
                    "root": str(root),
                    "modality": "ct",
                    "options": {"images": "images", "labels": "labels"},
                }
            ],
        },
        "preprocess": {"ct": {"spacing": [1.5, 1.5, 3.0], **preprocess}},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def run(recipe_path: Path, *overrides: str):
    return run_preprocess(load_recipe(recipe_path, list(overrides)), progress=False)


def test_first_run_preprocesses_every_case_and_the_second_skips_them(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    first = run(recipe)
    assert first.ok and sorted(first.processed) == ["ph/case0", "ph/case1", "ph/case2"]
    index = open_cache(tmp_path / "cache")
    assert [c.case_id for c in index.cases(labelled=True)] == ["case0", "case1"]
    meta = index.case("ph", "case0").meta
    assert meta["label_classes"] == [1, 6] and meta["source_path"].endswith("case0.nii.gz")
    assert meta["fingerprint"]["image"][0] == (dataset / "images" / "case0.nii.gz").stat().st_size
    assert meta["spacing"] == [1.5, 1.5, 3.0] and meta["preprocess"]["window_hu"] == [
        -1350.0,
        1000.0,
    ]
    second = run(recipe)
    assert second.processed == [] and len(second.skipped) == 3


def test_touched_source_and_changed_parameter_are_redone(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    run(recipe)
    image = dataset / "images" / "case1.nii.gz"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert run(recipe).processed == ["ph/case1"]
    label = dataset / "labels" / "case0.nii.gz"
    os.utime(label, ns=(label.stat().st_atime_ns, label.stat().st_mtime_ns + 1_000_000_000))
    assert run(recipe).processed == ["ph/case0"]
    changed = run(recipe, "preprocess.ct.window_hu=[-1000, 1000]")
    assert len(changed.processed) == 3
    assert open_cache(tmp_path / "cache").case("ph", "case0").meta["preprocess"]["window_hu"] == [
        -1000.0,
        1000.0,
    ]


def test_interrupted_case_is_redone_and_its_leftovers_cleaned(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    run(recipe)
    cache = tmp_path / "cache"
    # simulate a kill while case2 was being rewritten: no manifest entry, a temporary file left
    manifest = json.loads((cache / "manifest.json").read_text(encoding="utf-8"))
    del manifest["cases"]["ph/case2"]
    (cache / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    leftover = cache / "ph" / "case2" / ".tmp-image-x1y2.npy"
    leftover.write_bytes(b"half")
    (cache / ".tmp-manifest-zz.json").write_text("{", encoding="utf-8")
    summary = run(recipe)
    assert summary.processed == ["ph/case2"] and len(summary.skipped) == 2
    assert not leftover.exists() and not list(cache.glob(".tmp-*"))
    assert open_cache(cache).case("ph", "case2").image().shape


def test_missing_cache_file_makes_the_case_redone(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    run(recipe)
    (tmp_path / "cache" / "ph" / "case0" / "body_mask.npy").unlink()
    assert run(recipe).processed == ["ph/case0"]


def test_corrupt_case_is_reported_the_others_finish_and_nothing_partial_is_left(tmp_path, dataset):
    bad = dataset / "images" / "case1.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    recipe = write_recipe(tmp_path, dataset)
    summary = run(recipe)
    assert not summary.ok
    assert sorted(summary.processed) == ["ph/case0", "ph/case2"]
    [failure] = summary.failed
    assert (
        failure.key == "ph/case1"
        and "case1.nii.gz" in failure.reason
        and "truncated" in failure.reason
    )
    assert "FAILED ph/case1" in summary.describe()
    index = open_cache(tmp_path / "cache")
    assert [c.case_id for c in index.cases()] == ["case0", "case2"]
    assert not (tmp_path / "cache" / "ph" / "case1").exists()


@pytest.mark.parametrize("problem", ["nan", "label_grid", "4d", "2d"])
def test_bad_inputs_fail_with_the_promised_error_and_no_output(tmp_path, dataset, problem):
    path = dataset / "images" / "case0.nii.gz"
    if problem == "nan":
        data = np.zeros((24, 20, 8), np.float32)
        data[3, 3, 3] = np.nan
        nib.save(nib.Nifti1Image(data, LPS), path)
        expected = "NaN"
    elif problem == "label_grid":
        nib.save(
            nib.Nifti1Image(np.zeros((24, 20, 9), np.uint8), LPS),
            dataset / "labels" / "case0.nii.gz",
        )
        expected = "must lie on the image grid"
    elif problem == "4d":
        nib.save(nib.Nifti1Image(np.zeros((24, 20, 8, 2), np.int16), LPS), path)
        expected = "4D"
    else:
        nib.save(nib.Nifti1Image(np.zeros((24, 20), np.int16), LPS), path)
        expected = "3D"
    summary = run(write_recipe(tmp_path, dataset))
    [failure] = summary.failed
    assert (
        failure.key == "ph/case0"
        and expected in failure.reason
        and "case0.nii.gz" in failure.reason
    )
    assert not (tmp_path / "cache" / "ph" / "case0").exists()


@pytest.mark.multiprocess
def test_parallel_workers_give_the_same_cache(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    summary = run(recipe, "data.num_workers=2", f"data.cache_dir={tmp_path / 'parallel'}")
    serial = run(recipe)
    assert summary.ok and len(summary.processed) == 3
    a, b = open_cache(tmp_path / "parallel"), open_cache(tmp_path / "cache")
    for case_a, case_b in zip(a.cases(), b.cases(), strict=True):
        assert np.array_equal(case_a.image(), case_b.image())
        assert np.array_equal(
            case_a.label() if case_a.has_label else 0, case_b.label() if case_b.has_label else 0
        )
    assert serial.ok


def test_vanished_case_is_removed_from_the_cache(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    run(recipe)
    (dataset / "images" / "case2.nii.gz").unlink()
    summary = run(recipe)
    assert summary.removed == ["ph/case2"]
    assert not (tmp_path / "cache" / "ph" / "case2").exists()


def test_empty_folder_and_unknown_key_are_errors(tmp_path):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "labels").mkdir()
    with pytest.raises(DataError):
        run(write_recipe(tmp_path, empty))
    assert not (tmp_path / "cache").exists()  # nothing written
    with pytest.raises(ConfigError, match="spacingg"):
        run(write_recipe(tmp_path, empty, spacingg=[1, 1, 1]))


def test_duplicate_source_names_are_rejected(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data["data"]["sources"].append(dict(data["data"]["sources"][0]))
    recipe.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"data\.sources\.1\.name 'ph'"):
        run(recipe)


def test_cli_exit_codes_and_resolved_recipe(tmp_path, dataset, capsys):
    from voxssl.cli import main

    recipe = write_recipe(tmp_path, dataset)
    main(["preprocess", str(recipe), "--quiet"])  # success: returns normally (exit code 0)
    assert (tmp_path / "cache" / "recipe.resolved.yaml").is_file()
    bad = dataset / "images" / "case0.nii.gz"
    bad.write_bytes(b"\x1f\x8b broken")
    with pytest.raises(SystemExit) as failed:
        main(["preprocess", str(recipe), "--quiet"])
    assert failed.value.code == 1
    assert "FAILED ph/case0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as unknown:
        main(["preprocess", str(recipe), "--set", "preprocess.ct.nope=1"])
    assert unknown.value.code == 1
    assert "nope" in capsys.readouterr().err


def test_a_cached_case_whose_source_becomes_corrupt_leaves_the_cache(tmp_path, dataset):
    recipe = write_recipe(tmp_path, dataset)
    run(recipe)
    bad = dataset / "labels" / "case0.nii.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    summary = run(recipe)
    assert [f.key for f in summary.failed] == [
        "ph/case0"
    ] and "labels/case0.nii.gz" in summary.failed[0].reason
    assert [c.case_id for c in open_cache(tmp_path / "cache").cases()] == ["case1", "case2"]
    assert not (tmp_path / "cache" / "ph" / "case0").exists()


def test_fingerprint_of_a_dicom_folder_changes_when_a_slice_changes(tmp_path):
    from voxssl.data.case import Case
    from voxssl.data.pipeline import fingerprint

    folder = tmp_path / "series"
    folder.mkdir()
    for i in range(3):
        (folder / f"s{i}.dcm").write_bytes(b"x" * (10 + i))
    case = Case("d", folder, "ct")
    before = fingerprint(case)
    assert before["image"][0] == 10 + 11 + 12 and before["label"] is None
    stat = (folder / "s1.dcm").stat()
    os.utime(folder / "s1.dcm", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert fingerprint(case) != before
    assert fingerprint(Case("d", tmp_path / "absent", "ct"))["image"] is None


def test_a_scan_that_does_not_look_like_the_recipes_modality_is_refused(tmp_path, caplog):
    """An MR among CT scans is not cached as CT (one line naming it); with
    preprocess.check_scans false the user overrides the check and gets a warning."""
    root = tmp_path / "data"
    write_case(root, "ct_case", seed=0)
    mr_like = np.random.default_rng(1).integers(0, 800, size=(24, 20, 8)).astype(np.int16)
    nib.save(nib.Nifti1Image(mr_like, LPS), root / "images" / "mr_case.nii.gz")
    recipe = load_recipe(write_recipe(tmp_path, root))
    summary = run_preprocess(recipe, progress=False)
    assert summary.processed == ["ph/ct_case"] and [f.key for f in summary.failed] == ["ph/mr_case"]
    reason = summary.failed[0].reason
    assert "mr_case.nii.gz" in reason and "does not look like CT" in reason
    assert "check_scans" in reason and "\n" not in reason

    recipe.preprocess.check_scans = False
    with caplog.at_level("WARNING", logger="voxssl.data.preprocess"):
        summary = run_preprocess(recipe, progress=False)
    assert summary.ok and summary.processed == ["ph/mr_case"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert (
        len(warnings) == 1
        and "mr_case.nii.gz" in warnings[0]
        and "does not look like CT" in warnings[0]
    )
