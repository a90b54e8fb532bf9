"""The preprocessed cache: what ``voxssl preprocess`` writes and every later stage reads.

Layout (one folder per case, one memory-mappable ``.npy`` file per array)::

    cache_dir/manifest.json                      # every valid case: a snapshot (written atomically) ...
    cache_dir/manifest-<n>.journal               # ... plus one line per case recorded since (fsynced)
    cache_dir/recipe.resolved.yaml               # the recipe that built the cache
    cache_dir/<source>/<case_id>/image.npy       # float16, (X, Y, Z) or (C, X, Y, Z), values in [0, 1]
    cache_dir/<source>/<case_id>/label.npy       # uint8 canonical ids, 255 = not annotated (optional)
    cache_dir/<source>/<case_id>/body_mask.npy   # bool, (X, Y, Z)
    cache_dir/<source>/<case_id>/meta.json       # the same entry as in the manifest

Arrays are in RAS voxel order at the recipe's target spacing. ``np.load(..., mmap_mode="r")``
opens them without reading the whole file, so a sampler that cuts 128x128x32 crops only touches
the pages it needs (see ``benchmarks/preprocess.py`` for the float16-vs-float32 measurements).

A case is in the cache if and only if it has a manifest entry: files of a case without an entry
(an interrupted run) are ignored and rewritten by the next ``voxssl preprocess``.

Several processes may write one cache at once (two ``voxssl preprocess`` runs, the workers of
one): a case is written only under its lock (``<source>/.<case_id>.lock``) and the manifest only
under ``.manifest.lock`` (:func:`update_manifest`); lock files are removed when released. Each
case is recorded the moment its files are complete, as one appended journal line (constant cost
however large the cache); ``voxssl preprocess`` folds the journal into the snapshot
(:func:`compact_manifest`) when it starts, every few hundred cases and when it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxssl.errors import DataError
from voxssl.utils.atomic import atomic_path, atomic_write_text
from voxssl.utils.locking import file_lock
from voxssl.utils.triple import float_triple, int_triple

CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
META_NAME = "meta.json"
IMAGE_FILE = "image.npy"
LABEL_FILE = "label.npy"
BODY_MASK_FILE = "body_mask.npy"
IMAGE_DTYPE = np.float16  # values in [0, 1]; step <= 2**-11 (about 1.1 HU in a 2350 HU window)
LABEL_DTYPE = np.uint8
BODY_MASK_DTYPE = np.bool_


def case_key(source: str, case_id: str) -> str:
    """The manifest key of a case: case ids are unique within a source, not across sources."""
    return f"{source}/{case_id}"


@dataclass(frozen=True)
class CachedCase:
    """One preprocessed case. Arrays are opened lazily as read-only memory maps.

    ``meta`` holds (JSON types): ``case_id``, ``source``, ``modality``, ``spacing`` (mm, RAS),
    ``shape`` (spatial shape of the cached arrays), ``num_channels``, ``affine`` (voxel -> world
    RAS mm of the cached arrays), ``original_affine`` / ``original_shape`` (the source file's grid,
    as stored on disk), ``orientation``, ``ratio``, ``resampled_shape``, ``crop_box`` (what
    :func:`voxssl.data.geometry.to_original_geometry` needs to undo the geometry), ``intensity``
    (the mapping to [0, 1]), ``preprocess`` (the parameters used), ``annotated`` (canonical ids the
    label annotates; None = every class of the data set), ``label_classes`` (ids present),
    ``source_path`` / ``label_path`` / ``channel_paths``, ``fingerprint`` and ``files``.
    """

    cache_dir: Path
    meta: dict[str, Any]

    @property
    def case_id(self) -> str:
        return self.meta["case_id"]

    @property
    def source(self) -> str:
        return self.meta["source"]

    @property
    def key(self) -> str:
        return case_key(self.source, self.case_id)

    @property
    def modality(self) -> str:
        return self.meta["modality"]

    @property
    def spacing(self) -> tuple[float, float, float]:
        return float_triple(self.meta["spacing"])

    @property
    def shape(self) -> tuple[int, int, int]:
        return int_triple(self.meta["shape"])

    @property
    def num_channels(self) -> int:
        return int(self.meta.get("num_channels", 1))

    @property
    def has_label(self) -> bool:
        return self.meta["files"].get("label") is not None

    @property
    def annotated(self) -> tuple[int, ...] | None:
        value = self.meta.get("annotated")
        return None if value is None else tuple(int(v) for v in value)

    @property
    def directory(self) -> Path:
        return self.cache_dir / self.meta["directory"]

    def _load(self, role: str, mmap: bool) -> np.ndarray:
        path = self.directory / self.meta["files"][role]
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(
                f"cache file {path} is missing or corrupt ({err}); run `voxssl preprocess RECIPE` again"
            ) from None

    def image(self, mmap: bool = True) -> np.ndarray:
        """float16, (X, Y, Z) or (C, X, Y, Z), values in [0, 1]."""
        return self._load("image", mmap)

    def label(self, mmap: bool = True) -> np.ndarray | None:
        """uint8 canonical ids (255 = not annotated), (X, Y, Z); None for unlabelled cases."""
        if not self.has_label:
            return None
        return self._load("label", mmap)

    def body_mask(self, mmap: bool = True) -> np.ndarray:
        """bool, (X, Y, Z): True inside the body."""
        return self._load("body_mask", mmap)

    def __repr__(self) -> str:
        return f"CachedCase({self.key!r}, modality={self.modality!r}, shape={self.shape}, label={self.has_label})"


class CacheIndex:
    """Every case of a cache folder, as listed by its manifest."""

    def __init__(self, cache_dir: Path, manifest: dict[str, Any]):
        self.cache_dir = Path(cache_dir)
        self.manifest = manifest
        self._cases = [
            CachedCase(self.cache_dir, meta) for _, meta in sorted(manifest["cases"].items())
        ]

    def cases(self, source: str | None = None, labelled: bool | None = None) -> list[CachedCase]:
        """Cases in a stable order (by source, then case id), optionally filtered.

        Args:
            source: keep only this source name (the recipe's ``data.sources[i].name``).
            labelled: True keeps cases with a label, False those without, None all.
        """
        if source is not None and source not in self.sources:
            raise DataError(
                f"cache {self.cache_dir} has no source {source!r}; it has: {', '.join(self.sources) or 'none'}"
            )
        return [
            case
            for case in self._cases
            if (source is None or case.source == source)
            and (labelled is None or case.has_label == labelled)
        ]

    def case(self, source: str, case_id: str) -> CachedCase:
        for case in self._cases:
            if case.source == source and case.case_id == case_id:
                return case
        raise DataError(f"cache {self.cache_dir} has no case {case_key(source, case_id)!r}")

    @property
    def sources(self) -> list[str]:
        return sorted({case.source for case in self._cases})

    def __len__(self) -> int:
        return len(self._cases)

    def __iter__(self):
        return iter(self._cases)

    def __repr__(self) -> str:
        return f"CacheIndex({str(self.cache_dir)!r}, {len(self)} cases, sources={self.sources})"


def open_cache(cache_dir: str | os.PathLike) -> CacheIndex:
    """Open a cache folder written by ``voxssl preprocess``."""
    cache_dir = Path(cache_dir)
    hint = "run `voxssl preprocess RECIPE` first"
    if not cache_dir.is_dir():
        raise DataError(f"cache folder {cache_dir} does not exist; {hint}")
    manifest = read_manifest(cache_dir)
    if not manifest["cases"]:
        raise DataError(f"cache folder {cache_dir} holds no preprocessed case; {hint}")
    return CacheIndex(cache_dir, manifest)


# ---------------------------------------------------------------------------------------------
# Writing (used by voxssl.data.pipeline; one writer of the manifest: the parent process)


def empty_manifest() -> dict[str, Any]:
    return {"format_version": CACHE_FORMAT_VERSION, "cases": {}}


def read_manifest(cache_dir: Path) -> dict[str, Any]:
    """The manifest (snapshot plus its journal), or an empty one when the folder has none yet.

    Safe while another process records cases: if the snapshot is replaced while its journal is
    read (a compaction), the read starts again.
    """
    path = Path(cache_dir) / MANIFEST_NAME
    for _ in range(20):
        before = _stat_key(path)
        manifest = _read_snapshot(path)
        operations = _read_journal(_journal_path(cache_dir, manifest.get(JOURNAL_KEY, 0)))
        if _stat_key(path) == before:
            _apply(manifest, operations)
            return manifest
    raise DataError(f"cache manifest {path} keeps changing while it is read; try again")


def write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> None:
    """Replace the manifest by ``manifest`` (a new snapshot; the journal starts afresh).

    Call it under :func:`manifest_lock` when other processes may be writing the cache.
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / MANIFEST_NAME
    previous = _read_snapshot(path).get(JOURNAL_KEY, 0) if path.is_file() else -1
    manifest = {**manifest, JOURNAL_KEY: max(int(manifest.get(JOURNAL_KEY, 0)), previous + 1)}
    atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=True))
    for old in cache_dir.glob("manifest-*.journal"):
        if old != _journal_path(cache_dir, manifest[JOURNAL_KEY]):
            old.unlink(missing_ok=True)


MANIFEST_LOCK_NAME = ".manifest.lock"
#: Snapshot field naming its journal generation (``manifest-<n>.journal``).
JOURNAL_KEY = "journal"


@contextlib.contextmanager
def manifest_lock(cache_dir: Path) -> Iterator[None]:
    """Hold the lock of the cache's manifest (one writer at a time, across processes)."""
    with file_lock(Path(cache_dir) / MANIFEST_LOCK_NAME):
        yield


def update_manifest(
    cache_dir: Path,
    entries: dict[str, dict[str, Any]] | None = None,
    remove: Iterable[str] = (),
) -> None:
    """Record cases (``entries``) and drop others (``remove``) at once, under the manifest lock.

    The change is one appended, fsynced line of the journal beside the snapshot: its cost does
    not grow with the size of the cache (rewriting a 5000-case manifest after every case took
    seconds), and a killed writer leaves at most a torn last line, which readers skip.
    :func:`compact_manifest` folds the journal into the snapshot.
    """
    cache_dir = Path(cache_dir)
    line = json.dumps({"set": entries or {}, "remove": list(remove)}, sort_keys=True)
    with manifest_lock(cache_dir):
        journal = _current_journal(cache_dir)
        with open(journal, "ab") as fh:
            if fh.tell() and not _ends_with_newline(journal):
                fh.write(b"\n")  # end the torn line of a killed writer: it stays unreadable
            fh.write(line.encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())


def compact_manifest(cache_dir: Path) -> dict[str, Any]:
    """Fold the journal into a new snapshot (under the manifest lock); returns the manifest."""
    with manifest_lock(cache_dir):
        manifest = read_manifest(cache_dir)
        write_manifest(cache_dir, manifest)
    return manifest


def _journal_path(cache_dir: Path, generation: int) -> Path:
    return Path(cache_dir) / f"manifest-{int(generation)}.journal"


def _current_journal(cache_dir: Path) -> Path:
    """The journal that writers append to (called under the manifest lock)."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        write_manifest(cache_dir, empty_manifest())
    existing = sorted(Path(cache_dir).glob("manifest-*.journal"))
    if len(existing) == 1:
        return existing[0]
    return _journal_path(cache_dir, _read_snapshot(path).get(JOURNAL_KEY, 0))


def _read_snapshot(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return empty_manifest()
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(
            f"cache manifest {path} is unreadable ({err}); delete it and run `voxssl preprocess` again"
        ) from None
    if manifest.get("format_version") != CACHE_FORMAT_VERSION:
        raise DataError(
            f"cache manifest {path} has format version {manifest.get('format_version')}, this voxssl reads "
            f"{CACHE_FORMAT_VERSION}; run `voxssl preprocess RECIPE` into a new cache_dir"
        )
    return manifest


def _read_journal(path: Path) -> list[dict[str, Any]]:
    """The complete operations of a journal (a torn or unreadable line is skipped)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    operations = []
    for raw in data.split(b"\n"):
        try:
            operation = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(operation, dict):
            operations.append(operation)
    return operations


def _apply(manifest: dict[str, Any], operations: list[dict[str, Any]]) -> None:
    for operation in operations:
        for key in operation.get("remove", []):
            manifest["cases"].pop(key, None)
        manifest["cases"].update(operation.get("set", {}))


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


def _stat_key(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def case_lock_path(cache_dir: Path, source: str, case_id: str) -> Path:
    """The lock file of a case (beside its folder; it exists only while a process holds it)."""
    return Path(cache_dir) / source / f".{case_id}.lock"


def save_array(path: Path, array: np.ndarray) -> None:
    """Write one ``.npy`` atomically (temporary ``.tmp-*`` name, then rename)."""
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def write_case(
    case_dir: Path,
    image: np.ndarray,
    label: np.ndarray | None,
    body_mask: np.ndarray,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Write a case's arrays, then its meta.json (last). Returns ``meta`` with ``files`` filled in.

    Leftover temporary files of an interrupted earlier attempt are removed first, and a stale
    label file is removed when the case no longer has a label.
    """
    case_dir = Path(case_dir)
    case_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(case_dir)
    save_array(case_dir / IMAGE_FILE, image.astype(IMAGE_DTYPE, copy=False))
    if label is not None:
        save_array(case_dir / LABEL_FILE, label.astype(LABEL_DTYPE, copy=False))
    else:
        (case_dir / LABEL_FILE).unlink(missing_ok=True)
    save_array(case_dir / BODY_MASK_FILE, body_mask.astype(BODY_MASK_DTYPE, copy=False))
    meta = dict(meta)
    meta["files"] = {
        "image": IMAGE_FILE,
        "label": LABEL_FILE if label is not None else None,
        "body_mask": BODY_MASK_FILE,
    }
    atomic_write_text(case_dir / META_NAME, json.dumps(meta, indent=1, sort_keys=True))
    return meta


def remove_temporaries(folder: Path) -> int:
    """Delete ``.tmp-*`` leftovers of a killed writer in ``folder``; returns how many."""
    removed = 0
    for path in Path(folder).glob(".tmp-*"):
        path.unlink(missing_ok=True)
        removed += 1
    return removed


def case_files_present(cache_dir: Path, meta: dict[str, Any]) -> bool:
    """True when every file a manifest entry names exists with a readable ``.npy`` header."""
    directory = Path(cache_dir) / meta["directory"]
    for name in meta.get("files", {}).values():
        if name is None:
            continue
        path = directory / name
        try:
            with open(path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, _ = read_header(fh)
        except (OSError, ValueError):
            return False
        if tuple(shape[-3:]) != tuple(meta["shape"]):
            return False
    return True


__all__ = [
    "BODY_MASK_DTYPE",
    "IMAGE_DTYPE",
    "LABEL_DTYPE",
    "CacheIndex",
    "CachedCase",
    "case_files_present",
    "case_key",
    "case_lock_path",
    "compact_manifest",
    "manifest_lock",
    "open_cache",
    "read_manifest",
    "remove_temporaries",
    "update_manifest",
    "write_case",
    "write_manifest",
]
