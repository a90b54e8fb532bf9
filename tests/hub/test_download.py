"""Downloads against a real HTTP server on 127.0.0.1: resume, checksum, 404, mirrors, no network."""

from __future__ import annotations

import errno
import hashlib
import json

import pytest

from voxssl.hub import download as download_module
from voxssl.hub.download import copy_into_cache, download_file, read_record, verify_cached
from voxssl.hub.errors import (
    ChecksumMismatchError,
    DiskFullError,
    DownloadError,
    NetworkUnavailableError,
    RemoteFileNotFoundError,
)

from .http_server import Served, closed_port

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MB, not a multiple of the chunk size
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_records_and_reuses_cache(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(PAYLOAD)
    dest = tmp_path / "cache" / "w.pt"
    record = download_file([http_server.url("/w.pt")], dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert record.sha256 == SHA and record.sha256_from == "registry" and record.size == len(PAYLOAD)
    assert not (tmp_path / "cache" / "w.pt.part").exists()
    assert (
        json.loads((tmp_path / "cache" / "w.pt.json").read_text(encoding="utf-8"))["sha256"] == SHA
    )
    # cached: no second request
    download_file([http_server.url("/w.pt")], dest, sha256=SHA, progress=False)
    assert len(http_server.requests) == 1


def test_resume_after_dropped_connection_uses_range(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(PAYLOAD, drop_after=300_000, drops=2)
    dest = tmp_path / "w.pt"
    download_file([http_server.url("/w.pt")], dest, sha256=SHA, progress=False, retries=3)
    assert dest.read_bytes() == PAYLOAD
    ranges = [(r, status) for _, r, status in http_server.requests]
    assert ranges[0] == (None, 200)
    assert ranges[1] == ("bytes=300000-", 206)
    assert ranges[2] == ("bytes=600000-", 206)


def test_partial_file_survives_and_next_run_resumes(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(PAYLOAD, drop_after=100_000, drops=10)
    dest = tmp_path / "w.pt"
    with pytest.raises(DownloadError, match="next run resumes"):
        download_file([http_server.url("/w.pt")], dest, sha256=SHA, progress=False, retries=0)
    part = tmp_path / "w.pt.part"
    assert part.stat().st_size == 100_000 and not dest.exists()
    http_server.files["/w.pt"].drops = 0
    download_file([http_server.url("/w.pt")], dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and not part.exists()
    assert http_server.requests[-1][1:] == ("bytes=100000-", 206)


def test_server_without_range_support_restarts_cleanly(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(PAYLOAD, range=False)
    dest = tmp_path / "w.pt"
    (tmp_path / "w.pt.part").write_bytes(b"garbage from an older attempt")
    download_file([http_server.url("/w.pt")], dest, sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert http_server.requests == [("/w.pt", "bytes=29-", 200)]


def test_checksum_mismatch_deletes_file(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(PAYLOAD)
    dest = tmp_path / "w.pt"
    with pytest.raises(ChecksumMismatchError, match="deleted the bad file"):
        download_file([http_server.url("/w.pt")], dest, sha256="0" * 64, progress=False)
    assert list(tmp_path.glob("w.pt*")) == []  # no file, no record, no lock file


def test_cached_file_is_verified_before_use(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(PAYLOAD)
    dest = tmp_path / "w.pt"
    download_file([http_server.url("/w.pt")], dest, sha256=None, progress=False)
    assert read_record(dest).sha256_from == "computed" and read_record(dest).sha256 == SHA
    dest.write_bytes(PAYLOAD[:-1] + b"X")  # corrupted in the cache
    assert verify_cached(dest, None) is None and not dest.exists()  # the recorded sha256 catches it
    download_file([http_server.url("/w.pt")], dest, sha256=None, progress=False)
    assert dest.read_bytes() == PAYLOAD and len(http_server.requests) == 2


def test_404_is_reported_with_the_url(http_server, tmp_path):
    url = http_server.url("/missing.pt")
    with pytest.raises(RemoteFileNotFoundError, match=r"missing\.pt: HTTP 404"):
        download_file([url], tmp_path / "w.pt", progress=False)


def test_mirror_fallback(http_server, tmp_path):
    http_server.files["/mirror/w.pt"] = Served(PAYLOAD)
    urls = [
        f"http://127.0.0.1:{closed_port()}/w.pt",
        http_server.url("/gone.pt"),
        http_server.url("/mirror/w.pt"),
    ]
    record = download_file(urls, tmp_path / "w.pt", sha256=SHA, progress=False)
    assert record.source == urls[2]


def test_no_network(tmp_path):
    with pytest.raises(NetworkUnavailableError, match=r"cannot connect.*\n.*No network"):
        download_file(
            [f"http://127.0.0.1:{closed_port()}/w.pt"], tmp_path / "w.pt", progress=False, timeout=2
        )


def test_web_page_instead_of_file_is_refused(http_server, tmp_path):
    http_server.files["/w.pt"] = Served(
        b"<html>confirm</html>", content_type="text/html; charset=utf-8"
    )
    with pytest.raises(DownloadError, match="web page instead of the file"):
        download_file([http_server.url("/w.pt")], tmp_path / "w.pt", progress=False)
    assert not (tmp_path / "w.pt").exists()


def test_disk_full_names_cache_folder_and_removes_partial(http_server, tmp_path, monkeypatch):
    http_server.files["/w.pt"] = Served(PAYLOAD)
    real_open = open

    class FullFile:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, chunk):
            if self.written > 200_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(chunk)
            return self.fh.write(chunk)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    def fake_open(path, mode="r", *args, **kwargs):
        fh = real_open(path, mode, *args, **kwargs)
        return FullFile(fh) if str(path).endswith(".part") else fh

    monkeypatch.setattr(download_module, "open", fake_open, raising=False)
    monkeypatch.setattr(download_module, "CHUNK_SIZE", 65536)
    dest = tmp_path / "cache" / "w.pt"
    with pytest.raises(DiskFullError, match=r"weights cache .*cache.*VOXSSL_HOME"):
        download_file([http_server.url("/w.pt")], dest, sha256=SHA, progress=False)
    assert not (tmp_path / "cache" / "w.pt.part").exists() and not dest.exists()


def test_copy_into_cache_checks_the_registry_checksum(tmp_path):
    source = tmp_path / "downloaded.pt"
    source.write_bytes(PAYLOAD)
    with pytest.raises(ChecksumMismatchError, match=r"downloaded\.pt has sha256"):
        copy_into_cache(source, tmp_path / "cache" / "w.pt", sha256="1" * 64)
    record = copy_into_cache(source, tmp_path / "cache" / "w.pt", sha256=SHA)
    assert (
        record.sha256_from == "registry" and (tmp_path / "cache" / "w.pt").read_bytes() == PAYLOAD
    )
