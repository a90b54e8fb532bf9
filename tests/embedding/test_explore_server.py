"""The explore server's API over real HTTP on 127.0.0.1 (the page itself: test_explore_browser.py)."""

from __future__ import annotations

import gzip
import json
import struct
import urllib.error
import urllib.request

import nibabel as nib
import numpy as np
import pytest

from voxssl.embedding.similarity import SimilarityIndex
from voxssl.explore.launch import open_scans
from voxssl.explore.server import Explorer, ExploreServer

from .conftest import SHIFT_MM


@pytest.fixture(scope="module")
def scans(weights, phantom_pair, tmp_path_factory):
    scan_a, scan_b, _, _ = phantom_pair
    folder = tmp_path_factory.mktemp("explore-emb")
    return open_scans([scan_a, scan_b], str(weights), folder, stride=1, progress=False)


def _get(url: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def parse_click(body: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<I", body[:4])
    return json.loads(body[4 : 4 + length]), body[4 + length :]


def test_similarity_finds_the_same_voxel_in_the_moved_scan(scans):
    a, b = scans
    for components in (None, 6):
        index = SimilarityIndex(scans, components=components)
        for voxel in [(10, 12, 5), (25, 14, 9), (30, 20, 12)]:
            query = index.vector_at(0, voxel)
            own = index.similarity(0, query)
            assert own[voxel] == pytest.approx(1.0, abs=1e-5) and own.max() <= 1.0 + 1e-5
            match = index.best_match(1, index.similarity(1, query))
            assert match.voxel == voxel
            np.testing.assert_allclose(
                match.world, a.voxel_to_world(voxel)[0] + SHIFT_MM, atol=1e-4
            )
    # a naive reference: channels standardised over both scans' body voxels (all of them: the
    # sample is smaller than its limit here), then the cosine, in float64
    index = SimilarityIndex(scans)
    body = [np.asarray(s.embedding, np.float64)[s.body] for s in scans]
    pooled = np.concatenate(body)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0)
    flat = (np.asarray(b.embedding, np.float64).reshape(-1, b.dim) - mean) / std
    q = (np.asarray(a.embedding[7, 9, 4], np.float64) - mean) / std
    expected = flat @ q / np.linalg.norm(flat, axis=1).clip(1e-12) / np.linalg.norm(q)
    actual = index.similarity(1, index.vector_at(0, (7, 9, 4))).ravel()
    np.testing.assert_allclose(actual, expected, atol=1e-4)
    assert expected.min() < 0.0  # centred: dissimilar voxels are negative, not all ~1


def test_api_over_http(scans):
    a, b = scans
    with ExploreServer(Explorer(scans, components=None), port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, _, body = _get(server.url)
        assert status == 200 and b"niivue.umd.js" in body
        status, headers, body = _get(
            server.url + "static/niivue/niivue.umd.js", {"Accept-Encoding": "gzip"}
        )
        assert status == 200 and headers["Content-Encoding"] == "gzip"
        assert b"Niivue" in gzip.decompress(body)[:3_000_000]
        status, headers, body = _get(server.url + "static/niivue/niivue.umd.js")  # no gzip: plain
        assert status == 200 and "Content-Encoding" not in headers and body.startswith(b"(function")
        info = json.loads(_get(server.url + "api/info")[2])
        assert [s["embedding_shape"] for s in info["scans"]] == [list(a.shape), list(b.shape)]

        # the scan as NIfTI: same world geometry as the file
        volume = nib.Nifti1Image.from_bytes(_get(server.url + "api/scan/1.nii")[2])
        original = nib.load(str(b.source))
        world = lambda img, ijk: img.affine @ [*ijk, 1]  # noqa: E731
        np.testing.assert_allclose(
            world(volume, (0, 0, 0))[:3],
            world(original, (original.shape[0] - 1, original.shape[1] - 1, 0))[:3],
        )
        overlay = nib.Nifti1Image.from_bytes(_get(server.url + "api/overlay/0.nii")[2])
        assert overlay.shape == a.shape
        np.testing.assert_allclose(overlay.affine, a.affine, atol=1e-5)

        point = a.voxel_to_world([12, 10, 6])[0] + 0.4  # inside the voxel's block
        url = f"{server.url}api/click?scan=0&x={point[0]}&y={point[1]}&z={point[2]}"
        header, maps = parse_click(_get(url)[2])
        assert header["inside"] and header["voxel"] == [12, 10, 6]
        assert header["matches"][1]["voxel"] == [12, 10, 6]
        np.testing.assert_allclose(
            header["matches"][1]["world_mm"], a.voxel_to_world([12, 10, 6])[0] + SHIFT_MM, atol=1e-4
        )
        sizes = [int(np.prod(a.shape)), int(np.prod(b.shape))]
        assert len(maps) == 4 * sum(sizes)
        map_a = np.frombuffer(maps[: 4 * sizes[0]], "<f4").reshape(a.shape, order="F")
        assert map_a[12, 10, 6] == pytest.approx(1.0, abs=1e-5)
        assert {"p90", "max"} <= set(header["display"][0])

        header, maps = parse_click(_get(f"{server.url}api/click?scan=0&x=1e4&y=0&z=0")[2])
        assert header["inside"] is False and maps == b""
        assert _get(f"{server.url}api/click?scan=5&x=0&y=0&z=0")[0] == 400
        assert _get(f"{server.url}api/click?scan=0&x=abc&y=0&z=0")[0] == 400
        assert _get(server.url + "static/../server.py")[0] == 404
        assert _get(server.url + "nothing")[0] == 404
