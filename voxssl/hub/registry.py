"""The registry of published weights (``pretrained/registry.yaml``), validated on load.

Each entry says where a file is (primary URL, then mirrors), how to check it (sha256, size), how
to read it (``format``), which backbone it fits (``architecture``: fields of the ``model``
recipe section), how images must be prepared for it (``preprocessing``: fields of the
``preprocess.ct`` or ``preprocess.mr`` recipe section), and its licence, citation and model card.
Unknown facts are written as such (``sha256: null``, ``revision_verified: false``), never guessed.

Extra entries (a lab's own releases) can live in another YAML file named by ``$VOXSSL_REGISTRY``;
they are validated the same way and may not reuse a built-in name.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from voxssl.config.data import CTPreprocessConfig, MRPreprocessConfig
from voxssl.config.loader import from_dict, read_yaml
from voxssl.config.model import ModelConfig
from voxssl.errors import ConfigError
from voxssl.hub.errors import RegistryError

REGISTRY_ENV = "VOXSSL_REGISTRY"
WeightsFormat = Literal["vox2vec", "hierarchical", "voxssl"]
Modality = Literal["ct", "mr"]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


@dataclass
class RegistryEntry:
    """One published model. ``urls`` may be empty when the file has no direct link (then
    ``manual_download`` tells the user where to get it)."""

    name: str
    description: str
    format: WeightsFormat  # how the file is read: see voxssl.hub.convert
    modality: Modality
    filename: str  # name of the file in the cache (and as published)
    license: str
    citation: str
    card: str  # model card, relative to the registry file
    urls: list[str] = field(default_factory=list)  # primary first, then mirrors
    manual_download: str = ""  # where to get the file when there is no direct URL
    sha256: str | None = None  # None: unknown; the first download records the computed value
    size: int | None = None  # bytes, when known
    revision: str | None = None  # the commit the URL is pinned to (e.g. on the Hugging Face Hub)
    revision_verified: bool = False  # false: taken from secondary sources, not checked on the host
    architecture: dict[str, Any] = field(
        default_factory=dict
    )  # `model` recipe section (preset + fields)
    preprocessing: dict[str, Any] = field(
        default_factory=dict
    )  # `preprocess.<modality>` recipe section
    unverified: list[str] = field(default_factory=list)  # facts not confirmed from the source

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use lower-case letters, digits, '.', '_' or '-'")
        if self.sha256 is not None:
            self.sha256 = self.sha256.lower()
            if not _SHA256.match(self.sha256):
                raise ValueError(
                    f"{self.name}: sha256 must be 64 hex digits or null, got {self.sha256!r}"
                )
        for url in self.urls:
            if not _allowed_url(url):
                raise ValueError(
                    f"{self.name}: url {url!r} must start with https:// (plain http:// only for a "
                    "local server: 127.0.0.1, ::1 or localhost)"
                )
        if not self.urls and not self.manual_download:
            raise ValueError(f"{self.name}: give at least one url, or manual_download instructions")
        if "/" in self.filename or not self.filename:
            raise ValueError(f"{self.name}: filename {self.filename!r} must be a plain file name")
        if self.size is not None and self.size <= 0:
            raise ValueError(f"{self.name}: size must be a positive number of bytes or null")

    @property
    def in_channels(self) -> int:
        """Image channels the weights expect (``architecture.in_channels``, default 1)."""
        return int(self.architecture.get("in_channels", 1))


def _allowed_url(url: str) -> bool:
    """https://, or http:// to this machine (a local mirror or a test server)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.scheme == "https":
        return bool(parsed.netloc)
    return parsed.scheme == "http" and parsed.hostname in _LOCAL_HOSTS


@dataclass
class Registry:
    models: list[RegistryEntry] = field(default_factory=list)
    version: int = 1
    source: str = field(default="<registry>", init=False)
    root: Path = field(
        default=Path("."), init=False
    )  # folder of the registry file (cards are relative to it)

    def names(self) -> list[str]:
        return [entry.name for entry in self.models]

    def get(self, name: str) -> RegistryEntry:
        for entry in self.models:
            if entry.name == name:
                return entry
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise RegistryError(
            f"no model named '{name}' in {self.source}{hint}; known: {', '.join(self.names()) or 'none'}"
        )

    def __contains__(self, name: object) -> bool:
        return name in self.names()

    def card_path(self, entry: RegistryEntry) -> Path:
        return self.root / entry.card


def default_registry_path() -> Path:
    """``pretrained/registry.yaml`` of the voxssl checkout or installation."""
    return Path(__file__).resolve().parents[2] / "pretrained" / "registry.yaml"


def load_registry(path: str | os.PathLike | None = None, *, include_user: bool = True) -> Registry:
    """Load and validate the registry (plus ``$VOXSSL_REGISTRY`` entries when ``include_user``).

    Raises :class:`~voxssl.hub.errors.RegistryError` naming the file and field at fault.
    """
    registry = _load_one(Path(path) if path else default_registry_path())
    extra = os.environ.get(REGISTRY_ENV)
    if include_user and extra and path is None:
        user = _load_one(Path(extra).expanduser())
        for entry in user.models:
            if entry.name in registry:
                raise RegistryError(
                    f"{user.source}: model '{entry.name}' is already in {registry.source}"
                )
            entry.card = str((user.root / entry.card).resolve())
            registry.models.append(entry)
    return registry


def _load_one(path: Path) -> Registry:
    if not path.is_file():
        raise RegistryError(f"weights registry not found: {path}")
    try:
        data = read_yaml(path)
        registry = from_dict(Registry, data, source=str(path))
    except RegistryError:
        raise
    except ConfigError as err:
        raise RegistryError(str(err)) from None
    registry.source, registry.root = str(path), path.parent
    _check_registry(registry)
    return registry


def _check_registry(registry: Registry) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(registry.models):
        where = f"{registry.source}: models.{index} ({entry.name})"
        if entry.name in seen:
            raise RegistryError(f"{where}: duplicate name")
        seen.add(entry.name)
        if not registry.card_path(entry).is_file():
            raise RegistryError(f"{where}: model card not found: {registry.card_path(entry)}")
        _check_preprocessing(entry, where)
        _check_architecture(entry, where)


def _check_preprocessing(entry: RegistryEntry, where: str) -> None:

    schema = CTPreprocessConfig if entry.modality == "ct" else MRPreprocessConfig
    try:
        from_dict(
            schema, entry.preprocessing, where=f"preprocessing ({entry.modality})", source=where
        )
    except ConfigError as err:
        raise RegistryError(str(err)) from None


def _check_architecture(entry: RegistryEntry, where: str) -> None:
    """Validate against the ``model`` recipe schema."""
    try:
        from_dict(ModelConfig, entry.architecture, where="architecture", source=where)
    except ConfigError as err:
        raise RegistryError(str(err)) from None


__all__ = ["REGISTRY_ENV", "Registry", "RegistryEntry", "default_registry_path", "load_registry"]
