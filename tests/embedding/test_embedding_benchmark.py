"""benchmarks/embedding.py's own logic: landmark errors, the gate and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voxssl.explore.launch import open_scans

from .conftest import SHIFT_MM


def test_landmark_matching_on_a_moved_copy_is_exact_to_the_grid(
    benchmark_script, weights, phantom_pair, tmp_path
):
    bench = benchmark_script("embedding")
    scan_a, scan_b, label_a, landmarks_a = phantom_pair
    document = json.loads(landmarks_a.read_text())
    for entry in document["landmarks"]:
        entry["world_mm"] = list(np.add(entry["world_mm"], SHIFT_MM))
    landmarks_b = tmp_path / "b.json"
    landmarks_b.write_text(json.dumps(document))
    scans = open_scans([scan_a, scan_b], str(weights), tmp_path / "emb", stride=1, progress=False)
    labels = [label_a, scan_b.with_name("b_label.nii.gz")]
    result = bench.landmark_matching(scans, [landmarks_a, landmarks_b], labels)
    half_diagonal = 0.5 * np.linalg.norm([8.0, 8.0, 12.0])  # the embedding voxel of the test plan
    assert result["embedding"]["all"]["n"] > 2 * 10
    assert result["embedding"]["all"]["mean_mm"] <= half_diagonal + 1e-6
    # the body-box reference is exact too on a moved copy (same box, shifted)
    assert result["body_box_reference"]["all"]["mean_mm"] < 1e-3


def _arm(landmark_mm: float, phantom_dice: float, real_dice: float) -> dict:
    kinds = {
        k: {"mean_mm": landmark_mm, "median_mm": landmark_mm, "n": 3}
        for k in ("organ_centroid", "vertebra", "junction")
    }
    landmarks = {
        "embedding": {
            **kinds,
            "all": {"mean_mm": landmark_mm, "median_mm": landmark_mm, "within_10mm": 0.5, "n": 9},
        }
    }
    landmarks["body_box_reference"] = landmarks["embedding"]
    landmarks["pca_energy"] = 0.9
    real = {"organs": {"liver": real_dice}, "mean_dice": real_dice}
    return {
        "landmarks": landmarks,
        "landmarks_pca32": landmarks,
        "one_shot_phantoms": {
            "organs": {"liver": phantom_dice},
            "mean_dice": phantom_dice,
            "queries": 5,
        },
        "one_shot_real": {"ct_to_ct_dicom": real, "ct_to_mr": real},
    }


@pytest.mark.parametrize(
    ("pretrained", "failures"),
    [
        ((10.0, 0.6, 0.5), []),
        ((30.0, 0.6, 0.5), ["landmark error on phantoms"]),
        (
            (10.0, 0.2, 0.1),
            [
                "one-shot Dice on phantoms",
                "one-shot Dice on the real CT",
                "one-shot Dice on the real MR (CT -> MR)",
            ],
        ),
    ],
)
def test_gate_and_report(benchmark_script, pretrained, failures):
    bench = benchmark_script("embedding")
    result = {
        "pretrained": _arm(*pretrained),
        "random_init": _arm(20.0, 0.3, 0.2),
        "model_spacing_mm": [2.5, 2.5, 5.0],
        "pretrain_cases": 8,
        "pretrain_steps": 300,
        "pretrain_seconds": 600.0,
        "machine": "x86_64 CPU x2",
        "date": "2026-01-01",
        "heldout": 6,
    }
    result["gate_failures"] = bench.gate(result)
    assert result["gate_failures"] == failures
    text = bench.markdown_section(result)
    assert ("passed" in text) == (not failures) and "Landmark matching" in text


def test_every_pretraining_is_a_valid_demo_recipe(benchmark_script):
    """The overrides of every ``--pretraining`` apply to recipes/demo.yaml and give a recipe the
    schema accepts, each changing what its text says (a misspelt key would be an error)."""
    from voxssl.config.loader import apply_overrides, read_yaml
    from voxssl.config.recipe import recipe_from_dict

    bench = benchmark_script("embedding")
    assert bench.DEFAULT_PRETRAINING in bench.PRETRAININGS
    demo = read_yaml(bench.REPO / "recipes" / "demo.yaml")
    for name, pretraining in bench.PRETRAININGS.items():
        settings = apply_overrides(demo, pretraining["overrides"])
        recipe = recipe_from_dict(settings, f"--pretraining {name}")
        for override in pretraining["overrides"]:
            keys, value = override.split("=", 1)
            node = recipe
            for key in keys.split("."):
                node = getattr(node, key)
            assert str(node).lower() == value.lower(), override


def test_report_names_the_pretraining_and_reused_latency(benchmark_script):
    bench = benchmark_script("embedding")
    name = bench.DEFAULT_PRETRAINING
    result = {
        "pretrained": _arm(10.0, 0.6, 0.5),
        "random_init": _arm(20.0, 0.3, 0.2),
        "model_spacing_mm": [2.5, 2.5, 5.0],
        "pretrain_cases": 8,
        "pretrain_steps": 300,
        "pretrain_seconds": 600.0,
        "pretraining": {"name": name, **bench.PRETRAININGS[name]},
        "machine": "x86_64 CPU x2",
        "date": "2026-01-01",
        "heldout": 6,
        "gate_failures": [],
        "latency": {
            "model_spacing_mm": [2.5, 2.5, 5.0],
            "stride": 2,
            "embedding_grid": [80, 53, 38],
            "dim": 64,
            "embed_seconds_two_scans": 19.0,
            "index_seconds": 1.7,
            "server": {"median_ms": 6.5, "p95_ms": 7.9, "cpu_median_ms": 6.5},
            "paper_size_grid": {
                "grid": [103, 103, 75],
                "dim": 160,
                "full": {"median_ms": 80.0, "p95_ms": 90.0},
                "pca32": {"median_ms": 20.0, "p95_ms": 25.0},
            },
            "reused_from": {"file": "old.json", "date": "2025-12-31"},
        },
    }
    text = bench.markdown_section(result)
    assert f"--pretraining {name}" in text
    assert "reused from the run of 2025-12-31" in text
    del result["latency"]["reused_from"]
    assert "reused" not in bench.markdown_section(result)


def test_enhanced_copy_raises_each_organ_by_its_tissue_enhancement(benchmark_script, tmp_path):
    """The contrast-shifted slab of benchmarks/embedding_dev_signals.py: every labelled organ
    gains its phantom tissue's portal-venous enhancement, background and geometry unchanged."""
    import nibabel as nib

    from voxssl.data.phantoms.appearance import CT_TISSUES

    dev = benchmark_script("embedding_dev_signals")
    rng = np.random.default_rng(0)
    hu = rng.integers(-200, 200, size=(6, 5, 4)).astype(np.int16)
    label = np.zeros((6, 5, 4), dtype=np.uint8)
    label[1:3, 1:3, 1:3], label[4, 0, 0], label[5, 4, 3] = 6, 8, 3
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), str(tmp_path / "slab.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(tmp_path / "label.nii.gz"))
    out = dev.enhanced_copy(
        tmp_path / "slab.nii.gz", tmp_path / "label.nii.gz", tmp_path / "e.nii.gz"
    )
    written = nib.load(str(out))
    got = np.asarray(written.dataobj).astype(np.int64)
    expected = hu.astype(np.int64)
    for organ, tissue in ((6, "liver"), (8, "aorta"), (3, "kidney")):
        expected[label == organ] += int(CT_TISSUES[tissue].enhancement)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(written.affine, affine)


def test_a_kept_backbone_is_reused_only_for_the_same_pretraining(benchmark_script, tmp_path):
    """``--work`` keeps the pretrained backbone; another ``--pretraining`` must not reuse it."""
    bench = benchmark_script("embedding")
    backbone = tmp_path / "runs" / "embedding-benchmark" / "backbone.safetensors"
    backbone.parent.mkdir(parents=True)
    backbone.write_bytes(b"kept")
    made_with = {"overrides": [], "support_ct": False}
    (tmp_path / "pretrain_seconds.json").write_text(
        json.dumps({"seconds": 12.0, "made_with": made_with})
    )
    assert bench.pretrain_demo(tmp_path, 1, 0) == (backbone, 12.0)
    with pytest.raises(SystemExit, match="give another --work"):
        bench.pretrain_demo(tmp_path, 1, 0, overrides=["pretrain.local.enabled=true"])
