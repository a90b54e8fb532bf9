"""``voxssl one-shot``: label transfer through the voxel embedding, in the query's own grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from voxssl.cli import main
from voxssl.embedding.oneshot import block_majority, clean_components, spherical_kmeans

from .conftest import nifti_array


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_nearest_neighbour_transfer_recovers_the_moved_scan(weights, phantom_pair, tmp_path):
    scan_a, scan_b, label_a, _ = phantom_pair
    out = tmp_path / "seg"
    main(
        [
            "one-shot",
            str(scan_b),
            "--weights",
            str(weights),
            "--support",
            str(scan_a),
            str(label_a),
            "--out",
            str(out),
            "--method",
            "neighbours",
            "--neighbours",
            "1",
            "--neighbour-step",
            "1",
            "--cca",
            "none",
            "--stride",
            "1",
            "--classes",
            "1,2,3,6",
            "--embeddings",
            str(tmp_path / "emb"),
            "-q",
        ]
    )
    written = nib.load(str(out / "b_seg.nii.gz"))
    source = nib.load(str(scan_b))
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    # B is A moved and stored LPS: its own label file (also LPS) is the truth
    truth = nifti_array(scan_b.with_name("b_label.nii.gz"))
    predicted = np.asarray(written.dataobj)
    assert set(np.unique(predicted)) <= {0, 1, 2, 3, 6}
    for organ in (1, 2, 3, 6):
        assert dice(predicted == organ, truth == organ) > 0.97, organ


def test_default_method_with_stride_and_cleanup(weights, phantom_pair, tmp_path):
    scan_a, scan_b, label_a, _ = phantom_pair
    out = tmp_path / "seg"
    main(
        [
            "one-shot",
            str(scan_b),
            "--weights",
            str(weights),
            "--support",
            str(scan_a),
            str(label_a),
            "--out",
            str(out),
            "--stride",
            "2",
            "--classes",
            "6,2",
            "--embeddings",
            str(tmp_path / "emb"),
            "-q",
        ]
    )
    predicted = np.asarray(nib.load(str(out / "b_seg.nii.gz")).dataobj)
    assert predicted.shape == nib.load(str(scan_b)).shape
    assert set(np.unique(predicted)) <= {0, 2, 6}
    import cc3d

    for organ in (2, 6):  # the clean-up leaves one component per organ
        _, count = cc3d.connected_components(
            (predicted == organ).astype(np.uint8), connectivity=26, return_N=True
        )
        assert count <= 1


def test_user_errors(weights, phantom_pair, tmp_path, capsys):
    scan_a, scan_b, label_a, _ = phantom_pair

    def run(*extra):
        argv = [
            "one-shot",
            str(scan_b),
            "--weights",
            str(weights),
            "--out",
            str(tmp_path / "o"),
            "--embeddings",
            str(tmp_path / "emb"),
            "-q",
            *extra,
        ]
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        return exit_info.value.code, capsys.readouterr().err

    code, err = run("--support", str(scan_a), str(label_a), "--classes", "1,5")
    assert code == 1 and "--classes: id 5" in err
    small = tmp_path / "small_label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), str(small))
    code, err = run("--support", str(scan_a), str(small))
    assert code == 1 and "small_label.nii.gz" in err and "differs" in err
    code, err = run("--support", str(scan_a), str(label_a), "--method", "magic")
    assert code == 2 and "--method" in err  # a usage error: typer checks the choice
    assert not (tmp_path / "o").exists()


def test_block_majority_matches_a_loop():
    label = np.random.default_rng(0).integers(0, 4, size=(9, 6, 5)).astype(np.uint8)
    result = block_majority(label, 2)
    assert result.shape == (5, 3, 3)
    for index in np.ndindex(result.shape):
        block = np.zeros(8, dtype=np.uint8)  # the padding counts as background
        values = label[tuple(slice(2 * i, 2 * i + 2) for i in index)].ravel()
        block[: len(values)] = values
        counts = np.bincount(block, minlength=4)
        assert result[index] == np.argmax(counts)


def test_clean_components_keeps_the_most_confident_blob():
    probs = np.zeros((2, 20, 20, 10), np.float32)
    probs[0] = 0.6
    probs[1, 2:6, 2:6, 2:6] = 0.7  # winning blob, mean 0.7
    probs[1, 12:18, 12:18, 2:8] = 0.9  # larger and more confident
    cleaned = clean_components(probs)
    assert cleaned[1, 3, 3, 3] == 0 and cleaned[1, 15, 15, 5] == pytest.approx(0.9)
    assert cleaned[0].min() == pytest.approx(0.6)


def test_spherical_kmeans_finds_directions():
    rng = np.random.default_rng(0)
    axes = np.eye(4, dtype=np.float32)[:3]
    vectors = np.concatenate([axis + 0.05 * rng.standard_normal((50, 4)) for axis in axes]).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centroids = spherical_kmeans(vectors, 3, seed=1)
    assert np.sort((centroids @ axes.T).max(axis=0))[0] > 0.95
