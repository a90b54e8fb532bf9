"""Issue 15.4: the sha256 recorded in the weights cache is a pin. Against a real HTTP server on
127.0.0.1: a later download, a ``--file`` copy or a cached file that differs is refused and the
record kept; ``weights path`` on a tampered file exits non-zero; ``--file`` is converted before it
is recorded; no empty ``.lock`` files stay behind; http:// URLs are refused as the message says."""

from __future__ import annotations

import json

import pytest
import torch

from voxssl.hub.download import download_file, read_record, record_path, verify_cached
from voxssl.hub.errors import ChecksumMismatchError, DownloadError, RegistryError
from voxssl.hub.fetch import cached_path
from voxssl.hub.registry import load_registry
from voxssl.hub.resolve import registry_weights, resolve_weights

from .foreign import foreign_fpn_state
from .http_server import Served, closed_port
from .test_registry_resolve import write_registry


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory):
    import hashlib

    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.save(foreign_fpn_state(base=4, levels=3, blocks=2, seed=5), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


ORIGINAL = b"original weights " * 4096
OTHER = b"a different file " * 4096


def _record_sha(dest):
    return json.loads(record_path(dest).read_text(encoding="utf-8"))["sha256"]


def test_a_later_download_of_a_different_file_is_refused_and_the_record_kept(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(ORIGINAL)
    dest = tmp_path / "cache" / "w.pt"
    first = download_file([http_server.url("/w.pt")], dest, sha256=None, progress=False)
    assert first.sha256_from == "computed"
    pinned = first.sha256
    dest.unlink()  # the cached file is gone (cleaned, moved) but its record remains
    http_server.files["/w.pt"] = Served(OTHER)  # the server now serves something else
    with pytest.raises(ChecksumMismatchError, match="recorded"):
        download_file([http_server.url("/w.pt")], dest, sha256=None, progress=False)
    assert not dest.exists() and _record_sha(dest) == pinned


def test_a_tampered_cached_file_is_refused_and_its_record_kept(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(ORIGINAL)
    dest = tmp_path / "cache" / "w.pt"
    pinned = download_file([http_server.url("/w.pt")], dest, sha256=None, progress=False).sha256
    dest.write_bytes(OTHER)  # tampered with in the cache
    assert verify_cached(dest, None) is None
    assert _record_sha(dest) == pinned  # the pin survives the refusal
    http_server.files["/w.pt"] = Served(OTHER)
    with pytest.raises(ChecksumMismatchError):
        download_file([http_server.url("/w.pt")], dest, sha256=None, progress=False)
    assert _record_sha(dest) == pinned
    http_server.files["/w.pt"] = Served(ORIGINAL)  # the genuine file is accepted again
    assert download_file([http_server.url("/w.pt")], dest, progress=False).sha256 == pinned
    assert dest.read_bytes() == ORIGINAL


def test_download_file_copy_and_failures_leave_no_lock_files(http_server, tmp_path):
    from voxssl.hub.download import copy_into_cache

    folder = tmp_path / "cache"
    http_server.files["/w.pt"] = Served(ORIGINAL)
    download_file([http_server.url("/w.pt")], folder / "ok.pt", progress=False)
    with pytest.raises(DownloadError):
        download_file([http_server.url("/missing.pt")], folder / "missing.pt", progress=False)
    with pytest.raises(ChecksumMismatchError):
        download_file(
            [http_server.url("/w.pt")], folder / "bad.pt", sha256="0" * 64, progress=False
        )
    with pytest.raises(DownloadError):
        download_file(
            [f"http://127.0.0.1:{closed_port()}/w.pt"], folder / "off.pt", progress=False, timeout=2
        )
    local = tmp_path / "local.pt"
    local.write_bytes(OTHER)
    with pytest.raises(ChecksumMismatchError):
        copy_into_cache(local, folder / "ok.pt")  # pinned to ORIGINAL
    assert sorted(p.name for p in folder.iterdir()) == ["ok.pt", "ok.pt.json"]


def _cli(args, capsys):
    from voxssl.cli import main

    try:
        main(args)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_weights_path_on_a_tampered_file_exits_non_zero(
    http_server, tmp_path, tiny_pt, monkeypatch, capsys
):
    source, sha = tiny_pt
    http_server.files["/tiny.pt"] = Served(source.read_bytes())
    monkeypatch.setenv(
        "VOXSSL_REGISTRY",
        str(write_registry(tmp_path / "reg", [http_server.url("/tiny.pt")], None)),
    )
    code, _, err = _cli(["weights", "download", "tiny-vox2vec", "-q"], capsys)
    assert code == 0, err
    code, out, err = _cli(["weights", "path", "tiny-vox2vec"], capsys)
    assert code == 0 and out.strip().endswith("model.safetensors")
    downloaded = cached_path(load_registry().get("tiny-vox2vec"))
    downloaded.write_bytes(downloaded.read_bytes()[:-1] + b"X")
    code, out, err = _cli(["weights", "path", "tiny-vox2vec"], capsys)
    assert code == 1 and out == "" and str(downloaded) in err and sha in err
    assert "Traceback" not in err and read_record(downloaded).sha256 == sha
    downloaded.write_bytes(
        source.read_bytes()
    )  # restored: fine again; the conversion is checked too
    code, out, _ = _cli(["weights", "path", "tiny-vox2vec"], capsys)
    assert code == 0
    weights = out.strip()
    with open(weights, "r+b") as fh:
        fh.seek(-4, 2)
        fh.write(b"XXXX")
    code, out, err = _cli(["weights", "path", "tiny-vox2vec"], capsys)
    assert code == 1 and weights in err, (out, err)


def test_file_that_fails_conversion_is_not_recorded_as_cached(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(
        "VOXSSL_REGISTRY",
        str(write_registry(tmp_path / "reg", ["https://example.org/tiny.pt"], None)),
    )
    broken = tmp_path / "broken.pt"
    torch.save({"not": torch.zeros(2)}, broken)  # no vox2vec tensors: conversion fails
    code, _, err = _cli(["weights", "download", "tiny-vox2vec", "--file", str(broken)], capsys)
    assert code == 1 and "Traceback" not in err
    entry = load_registry().get("tiny-vox2vec")
    assert not cached_path(entry).exists() and read_record(cached_path(entry)) is None
    assert (
        not list(cached_path(entry).parent.glob("*"))
        if cached_path(entry).parent.exists()
        else True
    )
    code, out, _ = _cli(["weights", "list"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("tiny-vox2vec"))
    assert " no " in f" {row} "


def test_file_that_differs_from_the_pinned_download_is_refused(
    http_server, tmp_path, tiny_pt, monkeypatch
):
    source, sha = tiny_pt
    http_server.files["/tiny.pt"] = Served(source.read_bytes())
    registry = load_registry(write_registry(tmp_path / "reg", [http_server.url("/tiny.pt")], None))
    entry = registry.get("tiny-vox2vec")
    resolve_weights("tiny-vox2vec", registry=registry, progress=False)
    other = tmp_path / "other.pt"
    torch.save(foreign_fpn_state(base=4, levels=3, blocks=2, seed=9), other)
    with pytest.raises(ChecksumMismatchError, match="recorded"):
        registry_weights(entry, local_file=other, progress=False)
    assert read_record(cached_path(entry)).sha256 == sha
    assert cached_path(entry).read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://example.org/tiny.pt", False),
        ("ftp://example.org/tiny.pt", False),
        ("https://example.org/tiny.pt", True),
        ("http://127.0.0.1:8000/tiny.pt", True),
        ("http://localhost/tiny.pt", True),
    ],
)
def test_registry_urls_must_be_https_except_for_a_local_server(tmp_path, url, ok):
    path = write_registry(tmp_path, [url], None)
    if ok:
        assert load_registry(path).get("tiny-vox2vec").urls == [url]
    else:
        with pytest.raises(RegistryError) as info:
            load_registry(path)
        message = str(info.value)
        assert "https://" in message and url in message and "127.0.0.1" in message
