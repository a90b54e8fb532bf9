"""Get the file of a registry entry into the cache: already there (verified), downloaded, or copied
from a file the user downloaded by hand (``--file``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from voxssl.hub.download import DownloadRecord, copy_into_cache, download_file, verify_cached
from voxssl.hub.errors import DownloadError, ManualDownloadRequired
from voxssl.hub.registry import RegistryEntry
from voxssl.hub.weights_cache import weights_dir

logger = logging.getLogger(__name__)


def cached_path(entry: RegistryEntry) -> Path:
    """Where the entry's file lives in the cache (it may not be there yet)."""
    return weights_dir(entry.name) / entry.filename


def cached_record(entry: RegistryEntry) -> DownloadRecord | None:
    """The verified record of the cached file, or None when it is absent (or failed its check)."""
    return verify_cached(cached_path(entry), entry.sha256)


def fetch(
    entry: RegistryEntry, *, progress: bool = True, local_file: str | os.PathLike | None = None
) -> Path:
    """Return the verified cached file of ``entry``, getting it first if needed.

    ``local_file``: a copy the user downloaded by hand; it is checked against the registry's
    sha256 (when known) and copied into the cache. Without it, a cached file is used offline; a
    missing one is downloaded from the entry's URLs (primary, then mirrors). Entries without
    URLs raise :class:`ManualDownloadRequired` with the instructions of the registry.
    """
    dest = cached_path(entry)
    if local_file is not None:
        record = copy_into_cache(local_file, dest, sha256=entry.sha256, size=entry.size)
        _announce(entry, record)
        return dest
    if cached_record(entry) is not None:
        return dest
    if not entry.urls:
        raise ManualDownloadRequired(
            f"'{entry.name}' cannot be downloaded automatically. {entry.manual_download}"
        )
    try:
        record = download_file(
            entry.urls, dest, sha256=entry.sha256, size=entry.size, progress=progress
        )
    except DownloadError as err:
        raise type(err)(str(err).replace("download NAME", f"download {entry.name}")) from None
    _announce(entry, record)
    return dest


def _announce(entry: RegistryEntry, record: DownloadRecord) -> None:
    if record.sha256_from == "computed":
        logger.warning(
            "%s: no published sha256; this file's sha256 is %s (recorded in the cache; later uses must match it)",
            entry.name,
            record.sha256,
        )


__all__ = ["cached_path", "cached_record", "fetch"]
