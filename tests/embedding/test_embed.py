"""``voxssl embed``: tiled strided embeddings against a naive reference, the store, resuming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voxssl.cli import main
from voxssl.config.model import ModelConfig
from voxssl.embedding.compute import embed_volume, embedding_shape, tiles
from voxssl.embedding.store import StoredEmbedding
from voxssl.models.build import build_backbone

from .conftest import SHIFT_MM


def naive_embedding(backbone, image: np.ndarray, stride: int, z_context: int = 0) -> np.ndarray:
    """Every voxel's concatenated level features at full resolution (nearest upsampling of level
    i by 2^i) of the volume with ``z_context`` copies of its end slices added at both z ends,
    cropped back to the volume, then the mean over stride^3 blocks: (X', Y', Z', D)."""
    extended = np.concatenate(
        [
            np.repeat(image[:, :, :1], z_context, 2),
            image,
            np.repeat(image[:, :, -1:], z_context, 2),
        ],
        2,
    )
    with torch.no_grad():
        levels = backbone.eval()(torch.from_numpy(np.ascontiguousarray(extended))[None, None])
    shape = extended.shape
    full = []
    for i, level in enumerate(levels):
        up = level
        for dim in (2, 3, 4):
            up = up.repeat_interleave(2**i, dim=dim)
        full.append(up[:, :, : shape[0], : shape[1], : shape[2]])
    full = torch.cat(full, 1)[..., z_context : z_context + image.shape[2]]
    if stride > 1:
        full = F.avg_pool3d(full, stride)
    return full[0].permute(1, 2, 3, 0).numpy()


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    config = ModelConfig(
        preset="hierarchical", base_channels=4, num_levels=3, projection_channels=4
    )
    return build_backbone(config).eval()


@pytest.mark.parametrize(("stride", "z_context"), [(1, 0), (2, 0), (4, 0), (8, 0), (1, 4), (2, 8)])
def test_one_window_equals_the_naive_reference(backbone, stride, z_context):
    image = np.random.default_rng(0).random((32, 24, 16), dtype=np.float32)
    out = np.zeros((*embedding_shape(image.shape, stride), 12), np.float32)
    embed_volume(backbone, image, out, stride=stride, window=(64, 64, 64), z_context=z_context)
    expected = naive_embedding(backbone, image, stride, z_context)
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_tiles_partition_the_volume_and_tiling_stays_close(backbone):
    covered = np.zeros((48, 40, 24), int)
    for first, start, size in tiles((48, 40, 24), (24, 24, 16), 4, 4):
        assert all(
            f <= s and s + n <= f + w
            for f, s, n, w in zip(first, start, size, (24, 24, 16), strict=True)
        )
        covered[tuple(slice(s, s + n) for s, n in zip(start, size, strict=True))] += 1
    assert (covered == 1).all()
    image = np.random.default_rng(1).random((48, 40, 24), dtype=np.float32)
    tiled = np.zeros((24, 20, 12, 12), np.float32)
    embed_volume(backbone, image, tiled, stride=2, window=(24, 24, 16), margin=4, z_context=4)
    reference = naive_embedding(backbone, image, 2, z_context=4)
    assert np.corrcoef(tiled.ravel(), reference.ravel())[0, 1] > 0.99


def test_embed_cli_store_geometry_and_resume(weights, phantom_pair, tmp_path, monkeypatch):
    scan_a, scan_b, _, _ = phantom_pair
    out = tmp_path / "emb"
    main(
        [
            "embed",
            "--weights",
            str(weights),
            str(scan_a),
            str(scan_b),
            "--out",
            str(out),
            "-q",
            "--stride",
            "2",
        ]
    )
    a, b = StoredEmbedding.open(out / "a"), StoredEmbedding.open(out / "b")
    assert a.embedding.dtype == np.float16 and a.embedding.shape == (*a.shape, 12) and a.stride == 2
    assert a.body.shape == a.shape and a.body.any()
    meta = a.preprocess_meta
    assert a.shape == embedding_shape(meta["shape"], 2)
    # embedding voxel j is the block of preprocessed voxels 2j, 2j+1: centred half a voxel further
    cached = np.asarray(meta["affine"])
    np.testing.assert_allclose(a.voxel_to_world([[1, 2, 3]])[0], (cached @ [2.5, 4.5, 6.5, 1])[:3])
    # B is A moved in the scanner and stored LPS: same embedding, grid moved by the shift
    np.testing.assert_array_equal(np.asarray(a.embedding), np.asarray(b.embedding))
    np.testing.assert_allclose(b.affine[:3, 3] - a.affine[:3, 3], SHIFT_MM, atol=1e-6)

    # a re-run reuses both; another stride recomputes (the fingerprint records it)
    before = (out / "a" / "embedding.npy").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("recomputed an up-to-date embedding")

    monkeypatch.setattr("voxssl.embedding.embed.embed_volume", fail)
    main(
        ["embed", "--weights", str(weights), str(scan_a), "--out", str(out), "-q", "--stride", "2"]
    )
    assert (out / "a" / "embedding.npy").stat().st_mtime_ns == before

    # an interrupted run keeps the finished embedding and leaves no partial one
    def interrupted(backbone, image, out_array, progress=None, **kwargs):
        out_array[:1] = 1.0
        raise KeyboardInterrupt

    monkeypatch.setattr("voxssl.embedding.embed.embed_volume", interrupted)
    with pytest.raises(SystemExit):
        main(
            [
                "embed",
                "--weights",
                str(weights),
                str(scan_a),
                "--out",
                str(out),
                "-q",
                "--stride",
                "4",
            ]
        )
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    assert StoredEmbedding.open(out / "a").stride == 2
    assert json.loads((out / "a" / "embedding.json").read_text())["fingerprint"]["stride"] == 2


def test_embed_user_errors(weights, phantom_pair, tmp_path, capsys):
    scan_a, _, _, _ = phantom_pair

    def run(argv):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        return exit_info.value.code, capsys.readouterr().err

    code, err = run(
        [
            "embed",
            "--weights",
            str(weights),
            str(tmp_path / "nope.nii.gz"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1 and "nope.nii.gz" in err and "Traceback" not in err
    code, err = run(
        [
            "embed",
            "--weights",
            str(weights),
            str(scan_a),
            "--out",
            str(tmp_path / "o"),
            "--stride",
            "3",
        ]
    )
    assert code == 2 and "--stride" in err  # a usage error: typer checks the choice
    copy = tmp_path / "other"
    copy.mkdir()
    (copy / scan_a.name).write_bytes(scan_a.read_bytes())
    code, err = run(
        [
            "embed",
            "--weights",
            str(weights),
            str(scan_a),
            str(copy / scan_a.name),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1 and "both be stored as 'a'" in err
    assert not (tmp_path / "o").exists()
