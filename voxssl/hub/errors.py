"""Errors of the weights hub. All are user-facing (:class:`~voxssl.errors.VoxsslError`): the CLI
prints their message, which names the URL, file or folder at fault and what to do next."""

from __future__ import annotations

from voxssl.errors import CheckpointError, ConfigError, VoxsslError


class DownloadError(VoxsslError):
    """A file could not be downloaded (the message lists every URL that was tried)."""


class NetworkUnavailableError(DownloadError):
    """No server could be reached (no network, DNS failure, refused connection, timeout)."""


class RemoteFileNotFoundError(DownloadError):
    """The server answered HTTP 404: the file is not (or no longer) at that URL."""


class ChecksumMismatchError(DownloadError):
    """The downloaded or cached file does not have the expected sha256; the bad file was deleted."""


class DiskFullError(DownloadError):
    """The disk holding the weights cache is full; the partial file was removed."""


class ManualDownloadRequired(DownloadError):
    """The registry entry has no direct download URL (e.g. a Google Drive folder)."""


class RegistryError(ConfigError):
    """``registry.yaml`` is invalid or does not list the requested model."""


class ConversionError(CheckpointError):
    """A foreign checkpoint cannot be mapped onto the voxssl backbone (names the first bad key)."""


__all__ = [
    "ChecksumMismatchError",
    "ConversionError",
    "DiskFullError",
    "DownloadError",
    "ManualDownloadRequired",
    "NetworkUnavailableError",
    "RegistryError",
    "RemoteFileNotFoundError",
]
