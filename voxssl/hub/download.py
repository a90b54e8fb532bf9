"""Verified, resumable downloads into the weights cache (standard library ``urllib`` only).

The life of a download (the pattern of MONAI's ``download_url``, plus resuming)::

    NAME.part   bytes arrive here; a dropped connection keeps it and the next attempt (or the next
                run) asks for the rest with an HTTP ``Range`` header. A server that ignores
                ``Range`` (answers 200, not 206) makes the download restart cleanly from byte 0.
    verify      sha256 of the whole file against the registry's value; a mismatch deletes it.
    NAME        ``os.replace`` of the verified part: readers never see a half-written file.
    NAME.json   the record: sha256 (from the registry, or computed when the registry has none),
                size, URL. A cached file is hashed again before every use and must match it.
    NAME.lock   held while a process downloads NAME (deleted when released).

The record is a pin: once a file's sha256 is recorded, every later download, ``--file`` copy or
cached copy of it must have that sha256 (or the registry's, when the registry publishes one);
anything else is refused and the record is kept. A file that fails its check in the cache is
deleted (never its record), so the genuine file can be fetched again.

URLs are tried in order (primary, then mirrors). Errors are :mod:`voxssl.hub.errors` classes
whose messages list every URL tried and what went wrong with each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import http.client
import json
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from voxssl import __version__
from voxssl.hub.errors import (
    ChecksumMismatchError,
    DiskFullError,
    DownloadError,
    NetworkUnavailableError,
    RemoteFileNotFoundError,
)
from voxssl.hub.weights_cache import sha256_of
from voxssl.utils.atomic import atomic_write_text
from voxssl.utils.locking import file_lock

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
RETRY_BACKOFF_S = 0.5  # wait before resuming, times the attempt number (at most 10 times this)
ChecksumSource = Literal["registry", "computed"]


@dataclass(frozen=True)
class DownloadRecord:
    """What the cache remembers about a file (``NAME.json`` beside it)."""

    sha256: str
    size: int
    source: str  # the URL or local path it came from
    sha256_from: ChecksumSource  # "computed": the registry had no checksum; this one was recorded
    created: str = ""


class _DroppedConnection(Exception):
    """The connection ended before the announced number of bytes arrived (retry with Range)."""


def record_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".json")


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def read_record(dest: Path) -> DownloadRecord | None:
    path = record_path(dest)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return DownloadRecord(
            **{f.name: data[f.name] for f in dataclasses.fields(DownloadRecord) if f.name in data}
        )
    except (ValueError, TypeError, KeyError):
        logger.warning("ignoring unreadable download record %s", path)
        return None


def write_record(dest: Path, record: DownloadRecord) -> None:
    atomic_write_text(record_path(dest), json.dumps(dataclasses.asdict(record), indent=2) + "\n")


def expected_sha256(dest: Path, sha256: str | None) -> tuple[str | None, str]:
    """The sha256 a file at ``dest`` must have, and where it comes from.

    The registry's value when it publishes one; else the one recorded at the first download
    (the pin); else None (nothing known yet: the first download records it).
    """
    if sha256:
        return sha256.lower(), "published in the registry"
    record = read_record(dest)
    if record is not None:
        return record.sha256.lower(), f"recorded at its first download ({record_path(dest)})"
    return None, ""


def check_cached(dest: Path, sha256: str | None) -> DownloadRecord:
    """Hash a cached file against its expected sha256 without changing the cache.

    Raises :class:`ChecksumMismatchError` naming the file and both digests when it differs,
    :class:`DownloadError` when the file is absent.
    """
    dest = Path(dest)
    if not dest.is_file():
        raise DownloadError(f"{dest} is not in the weights cache")
    expected, origin = expected_sha256(dest, sha256)
    actual = sha256_of(dest)
    if expected is not None and actual != expected:
        raise ChecksumMismatchError(
            f"{dest} has sha256 {actual}, but {expected} was {origin}: the cached file was changed "
            "or damaged; it will not be used (download it again)"
        )
    return read_record(dest) or DownloadRecord(
        sha256=actual,
        size=dest.stat().st_size,
        source=str(dest),
        sha256_from="registry" if sha256 else "computed",
    )


def verify_cached(dest: Path, sha256: str | None) -> DownloadRecord | None:
    """Return the record of a cached file that passes its checksum, else None.

    The file is hashed every time (a cache can be corrupted by a full disk or a copy). The
    expected value is the registry's ``sha256`` or, when the registry has none, the one recorded
    at the first download. A file that fails is deleted, its record kept (the pin), so that the
    caller downloads the genuine file again.
    """
    dest = Path(dest)
    if not dest.is_file():
        return None
    record = read_record(dest)
    expected, origin = expected_sha256(dest, sha256)
    actual = sha256_of(dest)
    if expected is not None and actual != expected:
        logger.warning(
            "cached file %s has sha256 %s, but %s was %s: refusing it (deleted; its record is kept)",
            dest,
            actual,
            expected,
            origin,
        )
        _remove(dest)
        return None
    if record is None or record.sha256 != actual:
        record = DownloadRecord(
            sha256=actual,
            size=dest.stat().st_size,
            source=record.source if record else str(dest),
            sha256_from="registry" if sha256 else "computed",
            created=_now(),
        )
        write_record(dest, record)
    return record


def download_file(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    retries: int = 3,
) -> DownloadRecord:
    """Download ``dest`` from the first of ``urls`` that works, verify it, then move it into place.

    Args:
        urls: the primary URL first, then mirrors.
        dest: final path of the file (its folder is created).
        sha256: expected hex digest; ``None`` when unknown: the computed digest is then recorded
            (``sha256_from="computed"``) and every later use is checked against it.
        size: expected size in bytes, if known (a cheaper first check than the hash).
        progress: show a tqdm progress bar on stderr.
        timeout: seconds without data before a connection counts as dropped.
        retries: resumptions per URL after a dropped connection.

    Returns the :class:`DownloadRecord`. An already cached file that passes its checksum is not
    downloaded again. Raises :class:`NetworkUnavailableError`, :class:`RemoteFileNotFoundError`,
    :class:`ChecksumMismatchError`, :class:`DiskFullError` or :class:`DownloadError`.
    """
    dest = Path(dest)
    if not urls:
        raise DownloadError(f"no URL to download {dest.name} from")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        cached = verify_cached(dest, sha256)
        if cached is not None:
            return cached
        expected, origin = expected_sha256(dest, sha256)
        failures: list[tuple[str, DownloadError]] = []
        for url in urls:
            try:
                record = _download_verified(
                    url, dest, expected, size, progress, timeout, retries, origin
                )
            except DiskFullError:
                raise
            except DownloadError as err:
                logger.info("%s", err)
                failures.append((url, err))
                continue
            if expected is not None and not sha256:  # pinned by the record: keep its origin
                record = dataclasses.replace(record, sha256_from="computed")
            write_record(dest, record)
            if record.sha256_from == "computed" and expected is None:
                logger.info(
                    "%s: the registry gives no sha256 for this file; recorded the computed sha256 %s in %s "
                    "(compare it with a trusted source)",
                    dest.name,
                    record.sha256,
                    record_path(dest),
                )
            return record
        raise _combined_error(dest, failures)


def check_local_file(
    source: Path, dest: Path, sha256: str | None = None, size: int | None = None
) -> str:
    """A manually downloaded file must have the registry's sha256, or the one recorded for
    ``dest`` (the pin); returns its sha256. Nothing is written."""
    source = Path(source)
    if not source.is_file():
        raise DownloadError(f"file not found: {source}")
    actual = sha256_of(source)
    expected, origin = expected_sha256(Path(dest), sha256)
    if expected is not None and actual != expected:
        raise ChecksumMismatchError(
            f"{source} has sha256 {actual}, but {expected} was {origin}: not the published file "
            "(or a damaged copy); refused"
        )
    if size is not None and source.stat().st_size != size:
        raise ChecksumMismatchError(
            f"{source} has {source.stat().st_size} bytes, the registry expects {size}"
        )
    return actual


def copy_into_cache(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> DownloadRecord:
    """Place a manually downloaded file in the cache (verified, then written atomically)."""
    source, dest = Path(source), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _lock(dest):
        actual = check_local_file(source, dest, sha256, size)
        part = part_path(dest)
        try:
            shutil.copyfile(source, part)
        except OSError as err:
            _remove(part)
            if err.errno == errno.ENOSPC:
                raise _disk_full(dest) from None
            raise
        os.replace(part, dest)
        previous = read_record(dest)
        record = DownloadRecord(
            sha256=actual,
            size=dest.stat().st_size,
            source=str(source.resolve()),
            sha256_from="registry"
            if sha256
            else (previous.sha256_from if previous else "computed"),
            created=_now(),
        )
        write_record(dest, record)
    return record


# --------------------------------------------------------------------------------------------
# one URL


def _download_verified(
    url: str,
    dest: Path,
    sha256: str | None,
    size: int | None,
    progress: bool,
    timeout: float,
    retries: int,
    origin: str = "published in the registry",
) -> DownloadRecord:
    part = part_path(dest)
    _download_resumable(url, part, size, progress, timeout, retries)
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        _remove(part)
        raise ChecksumMismatchError(
            f"{url}: got {actual_size} bytes, expected {size}; deleted the download"
        )
    actual = sha256_of(part)
    if sha256 and actual != sha256.lower():
        _remove(part)
        raise ChecksumMismatchError(
            f"{url}: sha256 of the download is {actual}, but {sha256.lower()} was {origin}; "
            "refused and deleted the bad file"
        )
    os.replace(part, dest)
    return DownloadRecord(
        sha256=actual,
        size=actual_size,
        source=url,
        sha256_from="registry" if sha256 else "computed",
        created=_now(),
    )


def _download_resumable(
    url: str, part: Path, size: int | None, progress: bool, timeout: float, retries: int
) -> None:
    """Fill ``part`` with the whole file, resuming after dropped connections."""
    attempt = 0
    while True:
        try:
            _transfer(url, part, size, progress, timeout)
            return
        except _DroppedConnection as err:
            attempt += 1
            have = part.stat().st_size if part.exists() else 0
            if attempt > retries:
                raise DownloadError(
                    f"{url}: connection dropped {attempt} times ({err}); the {have} bytes received are kept in "
                    f"{part} and the next run resumes from there"
                ) from None
            logger.warning("%s: connection dropped after %d bytes (%s); resuming", url, have, err)
            time.sleep(RETRY_BACKOFF_S * min(attempt, 10))


def _transfer(url: str, part: Path, size: int | None, progress: bool, timeout: float) -> None:
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        _remove(part)
        start = 0
    headers = {"User-Agent": f"voxssl/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as err:
        err.close()
        if (
            err.code == 416 and start
        ):  # nothing after our bytes: complete, or a stale part of another file
            if size is not None and start == size:
                return
            logger.warning("%s: server refused to resume at byte %d; restarting from 0", url, start)
            _remove(part)
            raise _DroppedConnection("range not satisfiable") from None
        if err.code == 404:
            raise RemoteFileNotFoundError(
                f"{url}: HTTP 404 Not Found (the file is not at this address)"
            ) from None
        if err.code >= 500 or err.code == 429:
            raise _DroppedConnection(f"HTTP {err.code} {err.reason}") from None
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        raise NetworkUnavailableError(f"{url}: cannot connect ({reason})") from None

    with response:
        mode, offset = _write_mode(response, url, start)
        total = _total_size(response, offset)
        _refuse_web_page(response, url)
        with _progress_bar(progress, total, offset, part.name.removesuffix(".part")) as bar:
            received = _stream(response, part, mode, bar)
    if total is not None and offset + received < total:
        raise _DroppedConnection(f"received {offset + received} of {total} bytes")


def _write_mode(response: http.client.HTTPResponse, url: str, start: int) -> tuple[str, int]:
    """Append on a 206 that continues our bytes; otherwise restart the file from byte 0."""
    if start and response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        match = re.match(r"bytes (\d+)-", content_range)
        if match and int(match.group(1)) == start:
            return "ab", start
        logger.warning("%s: unexpected Content-Range %r; restarting from 0", url, content_range)
        raise _DroppedConnection("bad Content-Range")
    if start:
        logger.info(
            "%s: the server does not support resuming (HTTP Range); restarting from byte 0", url
        )
    return "wb", 0


def _total_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def _refuse_web_page(response: http.client.HTTPResponse, url: str) -> None:
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/html"):
        raise DownloadError(
            f"{url}: the server sent a web page instead of the file (a login, quota or 'large file' "
            "confirmation page, as Google Drive shows); download the file in a browser and pass it with "
            "'voxssl weights download NAME --file PATH'"
        )


def _stream(response: IO[bytes], part: Path, mode: str, bar) -> int:
    received = 0
    try:
        with open(part, mode) as fh:
            while True:
                try:
                    chunk = response.read(CHUNK_SIZE)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError) as err:
                    fh.flush()
                    raise _DroppedConnection(str(err) or type(err).__name__) from None
                except OSError as err:
                    raise _DroppedConnection(str(err)) from None
                if not chunk:
                    break
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        if err.errno == errno.ENOSPC:
            _remove(part)
            raise _disk_full(part) from None
        raise
    return received


# --------------------------------------------------------------------------------------------
# helpers


def _disk_full(path: Path) -> DiskFullError:
    return DiskFullError(
        f"no space left on the device while writing {path.name} into the weights cache {path.parent}; "
        "the partial file was removed. Free some space there, or move the cache to a larger disk with "
        "VOXSSL_HOME=/path/with/space"
    )


def _combined_error(dest: Path, failures: list[tuple[str, DownloadError]]) -> DownloadError:
    kinds = {type(err) for _, err in failures}
    cls = kinds.pop() if len(kinds) == 1 else DownloadError
    lines = "\n".join(f"  - {err}" for _, err in failures)
    hint = ""
    if cls is NetworkUnavailableError:
        hint = (
            "\nNo network? Copy the file from a machine that has one and run "
            "'voxssl weights download NAME --file PATH', or pass a local file to --weights."
        )
    return cls(f"could not download {dest.name} from any of {len(failures)} URL(s):\n{lines}{hint}")


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int | None, initial: int, name: str) -> Iterator:
    from tqdm import tqdm

    with tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=not enabled,
    ) as bar:
        yield bar


@contextlib.contextmanager
def _lock(dest: Path) -> Iterator[None]:
    """Serialise downloads of one file by concurrent processes (``NAME.lock``, removed after)."""
    with file_lock(dest.with_name(dest.name + ".lock")):
        yield


def _remove(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


__all__ = [
    "DownloadRecord",
    "check_cached",
    "check_local_file",
    "copy_into_cache",
    "download_file",
    "expected_sha256",
    "read_record",
    "record_path",
    "verify_cached",
]
