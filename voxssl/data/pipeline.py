"""``voxssl preprocess``: every case of every recipe source -> the cache (see :mod:`voxssl.data.cache`).

* Skips cases already in the manifest whose source fingerprint (size + mtime of image, channels
  and label) and parameter hash match and whose files are present; redoes the others.
* A case is processed under its lock (one process per case, across runs and workers): under it
  the manifest entry is read afresh (a concurrent run may have just done the case: then it is
  skipped), removed before the case is rewritten (a run killed mid-way never leaves an entry
  pointing at half-new files), and added back as soon as every file of the case is written, so a
  killed run loses no finished case. A failed case's folder is deleted.
* Cases locked by another run are left for later; once the others are done the run waits for
  them (they are then usually up to date).
* Cases run in ``data.num_workers`` spawned processes; a case that fails (corrupt or unreadable
  input) is reported with its file and reason and the others finish.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxssl.config.data import PreprocessConfig, SourceConfig
from voxssl.data import cache as cache_format
from voxssl.data.adapters import annotated_classes_from_label, find_cases
from voxssl.data.case import Case
from voxssl.data.modality_check import label_map_suspicion, modality_mismatch
from voxssl.data.preprocess import preprocess_params, preprocess_volume
from voxssl.data.readers import check_label_header, read_case_image, read_case_label
from voxssl.errors import ConfigError, DataError, VoxsslError
from voxssl.utils.locking import file_lock

log = logging.getLogger(__name__)


#: Cases recorded between two foldings of the manifest journal into its snapshot.
_COMPACT_EVERY = 500
#: Temporary files in the cache root older than this are leftovers of a killed writer.
_STALE_TEMPORARY_S = 600.0


@dataclass
class CaseFailure:
    key: str
    path: str
    reason: str


@dataclass
class Summary:
    cache_dir: Path
    processed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[CaseFailure] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def describe(self) -> str:
        lines = [
            f"cache {self.cache_dir}: {len(self.processed)} preprocessed, {len(self.skipped)} up to date, "
            f"{len(self.failed)} failed, {len(self.removed)} removed ({self.seconds:.1f} s)"
        ]
        lines += [f"  FAILED {f.key}: {f.reason}" for f in self.failed]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    key: str
    source: str
    case: Case
    cache_dir: Path
    case_dir: Path
    cfg: PreprocessConfig
    fingerprint: dict[str, Any]
    params_hash: str


def run_preprocess(recipe, progress: bool = True) -> Summary:
    """Preprocess every case of ``recipe.data.sources`` into ``recipe.data.cache_dir``.

    Raises ConfigError/DataError for problems of the recipe or of a whole source (no case found);
    per-case problems are collected in ``Summary.failed`` (check ``Summary.ok``).
    """

    started = time.perf_counter()
    data_cfg = recipe.data
    if not data_cfg.sources:
        raise ConfigError(f"{recipe.source_file}: data.sources is empty; nothing to preprocess")
    _check_source_names(data_cfg.sources, recipe.source_file)
    cache_dir = Path(data_cfg.cache_dir).expanduser()
    jobs: list[_Job] = []
    for index, source in enumerate(
        data_cfg.sources
    ):  # every source found before anything is written
        cases = find_cases(source, where=f"data.sources.{index}", recipe_file=recipe.source_file)
        jobs += [_job(source, case, cache_dir, recipe.preprocess) for case in cases]
    cache_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary(cache_dir=cache_dir)
    with cache_format.manifest_lock(cache_dir):
        _remove_stale_temporaries(cache_dir)
        _remove_stale_locks(cache_dir, data_cfg.sources)
        manifest = cache_format.read_manifest(cache_dir)
        summary.removed = _drop_vanished_cases(
            manifest, data_cfg.sources, {job.key for job in jobs}, cache_dir
        )
        cache_format.write_manifest(cache_dir, manifest)  # the journal folded in
    todo = []
    for job in jobs:  # a first look; each job checks again under its lock
        if _is_up_to_date(manifest["cases"].get(job.key), job, cache_dir):
            summary.skipped.append(job.key)
        else:
            todo.append(job)
    if todo:
        log.info(
            "preprocessing %d of %d cases into %s (%d up to date)",
            len(todo),
            len(jobs),
            cache_dir,
            len(summary.skipped),
        )
    try:
        _run_jobs(todo, summary, max(1, int(data_cfg.num_workers)), progress)
    finally:
        cache_format.compact_manifest(cache_dir)
    summary.seconds = time.perf_counter() - started
    return summary


def preprocess_case(case: Case, cfg: PreprocessConfig) -> tuple:
    """Read and preprocess one case in memory: ``(image, label, body_mask, meta)``."""

    volume = read_case_image(case, max_voxels=cfg.max_voxels)
    if cfg.check_scans:
        check_scan(volume.data, case)
    if case.label is not None and case.label_format == "nifti":  # fail fast, before any work
        check_label_header(case, volume, tolerance_voxels=cfg.label_grid_tolerance)

    def read_label():  # after the image is resampled and its source freed: lower peak memory
        return read_case_label(
            case, volume, tolerance_voxels=cfg.label_grid_tolerance, require_organs=True
        )

    image, label, body, meta = preprocess_volume(
        volume, case.modality, cfg, read_label, release_source=True
    )
    meta["label_classes"] = sorted(int(v) for v in _present_ids(label)) if label is not None else []
    # partial labels (FLARE23): the classes a case annotates are those its label contains
    annotated = (
        annotated_classes_from_label(meta["label_classes"], case) if label is not None else None
    )
    meta["annotated"] = list(annotated) if annotated is not None else None
    return image, label, body, meta


def check_scan(data, case: Case) -> None:
    """Refuse, before anything is cached, a label map put among the scans and a scan whose
    intensities contradict its source's modality (an MR in a CT folder)."""
    label_like = label_map_suspicion(data)
    if label_like:
        raise DataError(
            f"{case.image}: looks like a label map, not a {case.modality.upper()} scan: {label_like}; "
            f"put label maps in their own folder and give it as the source's options.labels "
            f"(or set preprocess.check_scans: false)"
        )
    mismatch = modality_mismatch(data, case.modality)
    if mismatch:
        raise DataError(
            f"{case.image}: does not look like {case.modality.upper()}, the modality of its source: "
            f"{mismatch} Give scans of another modality their own source (or set "
            f"preprocess.check_scans: false)"
        )


def fingerprint(case: Case) -> dict[str, Any]:
    """size + mtime_ns of every input file (every file of a DICOM or PNG folder)."""
    paths = {"image": case.image, "label": case.label}
    paths.update({f"channel{i}": p for i, p in enumerate(case.channels)})
    return {
        role: _path_fingerprint(Path(p)) if p is not None else None
        for role, p in sorted(paths.items())
    }


def params_hash(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------


def _job(source: SourceConfig, case: Case, cache_dir: Path, cfg: PreprocessConfig) -> _Job:

    params = {
        "preprocess": preprocess_params(cfg.for_modality(case.modality), case.modality),
        "label_grid_tolerance": cfg.label_grid_tolerance,
        "label_map": sorted((case.label_map or {}).items()),
        "annotated": list(case.annotated) if case.annotated is not None else None,
        "partial_labels": bool(case.metadata.get("partial_labels", False)),
        "cache_format": cache_format.CACHE_FORMAT_VERSION,
    }
    return _Job(
        key=cache_format.case_key(source.name, case.case_id),
        source=source.name,
        case=case,
        cache_dir=cache_dir,
        case_dir=cache_dir / source.name / case.case_id,
        cfg=cfg,
        fingerprint=fingerprint(case),
        params_hash=params_hash(params),
    )


def _is_up_to_date(entry: dict[str, Any] | None, job: _Job, cache_dir: Path) -> bool:
    return (
        entry is not None
        and entry.get("fingerprint") == job.fingerprint
        and entry.get("params_hash") == job.params_hash
        and cache_format.case_files_present(cache_dir, entry)
    )


def _run_jobs(todo: list[_Job], summary: Summary, workers: int, progress: bool) -> None:
    """Run the jobs (in worker processes when ``workers > 1``); cases another run holds are
    retried at the end, waiting for their locks."""
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="preprocess", unit="case", disable=not progress or not todo)

    def record(job: _Job, outcome: tuple[str, Any]) -> bool:
        """Account for one outcome; False when the case was busy (left for later)."""
        status, value = outcome
        if status == "busy":
            return False
        if status == "ok":
            summary.processed.append(job.key)
            if len(summary.processed) % _COMPACT_EVERY == 0:  # keeps the journal short
                cache_format.compact_manifest(summary.cache_dir)
        elif status == "skipped":
            summary.skipped.append(job.key)
            log.info("%s was preprocessed by another run meanwhile", job.key)
        else:
            path, reason = value
            summary.failed.append(_failure(job, path, reason))
            log.error("%s failed: %s", job.key, reason)
        bar.update(1)
        return True

    try:
        busy = _run_all(todo, record, workers, wait=False)
        if busy:
            log.info("waiting for %d case(s) that another run is preprocessing", len(busy))
            _run_all(busy, record, workers, wait=True)
    finally:
        bar.close()


def _run_all(jobs: list[_Job], record, workers: int, wait: bool) -> list[_Job]:
    """Run ``jobs``; returns those found busy (locked by another process)."""
    busy: list[_Job] = []
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            if not record(job, _run_job(job, wait)):
                busy.append(job)
        return busy
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        pending: dict[Future, _Job] = {pool.submit(_run_job, job, wait): job for job in jobs}
        while pending:
            done, _ = wait_for(pending, return_when=FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as err:  # a worker that died (out of memory, killed)
                    reason = f"worker process failed: {type(err).__name__}: {err}"
                    outcome = ("failed", (str(job.case.image), reason))
                if not record(job, outcome):
                    busy.append(job)
    return busy


def _run_job(job: _Job, wait: bool = False) -> tuple[str, Any]:
    """Preprocess one case under its lock and record it in the manifest. Never raises for a bad
    input. Returns ``("ok", meta)``, ``("skipped", meta)`` (up to date: another run did it),
    ``("busy", None)`` (locked by another process and ``wait`` is False) or
    ``("failed", (path, reason))``."""
    lock = cache_format.case_lock_path(job.cache_dir, job.source, job.case.case_id)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock, blocking=wait) as held:
        if not held:
            return "busy", None
        entry = cache_format.read_manifest(job.cache_dir)["cases"].get(job.key)
        if _is_up_to_date(entry, job, job.cache_dir):
            return "skipped", entry
        if entry is not None:  # never an entry that points at files being rewritten
            cache_format.update_manifest(job.cache_dir, remove=[job.key])
        outcome = _preprocess_and_write(job)
        if outcome[0] == "ok":
            cache_format.update_manifest(job.cache_dir, {job.key: outcome[1]})
        else:
            shutil.rmtree(job.case_dir, ignore_errors=True)  # no partial or stale output
        return outcome


def _preprocess_and_write(job: _Job) -> tuple[str, Any]:
    try:
        image, label, body, meta = preprocess_case(job.case, job.cfg)
        meta.update(
            case_id=job.case.case_id,
            source=job.source,
            directory=str(Path(job.source) / job.case.case_id),
            source_path=str(job.case.image),
            label_path=str(job.case.label) if job.case.label is not None else None,
            label_format=job.case.label_format,
            channel_paths=[str(p) for p in job.case.channels],
            case_metadata=_json_safe(job.case.metadata),
            fingerprint=job.fingerprint,
            params_hash=job.params_hash,
        )
        meta = cache_format.write_case(job.case_dir, image, label, body, meta)
        return "ok", meta
    except VoxsslError as err:
        return "failed", (str(job.case.image), str(err))
    except MemoryError:
        return "failed", (
            str(job.case.image),
            f"{job.case.image}: out of memory while preprocessing (is the image larger than this "
            "machine can hold?)",
        )
    except (
        Exception
    ) as err:  # an unexpected reader error on a corrupt file: report, do not stop others
        log.debug("unexpected error on %s", job.key, exc_info=True)
        return "failed", (str(job.case.image), f"{type(err).__name__}: {err}")


def _failure(job: _Job, path: str, reason: str) -> CaseFailure:
    return CaseFailure(key=job.key, path=path, reason=reason)


def _drop_vanished_cases(
    manifest: dict, sources: list[SourceConfig], keys: set[str], cache_dir: Path
) -> list[str]:
    """Remove entries (and files) of a recipe source's cases that the source no longer has
    (called under the manifest lock; a case another process holds is left alone)."""
    names = {source.name for source in sources}
    removed = []
    for key, entry in list(manifest["cases"].items()):
        if entry.get("source") in names and key not in keys:
            lock = cache_format.case_lock_path(cache_dir, entry["source"], entry["case_id"])
            with file_lock(lock, blocking=False) as held:
                if not held:
                    continue
                del manifest["cases"][key]
                shutil.rmtree(cache_dir / entry["directory"], ignore_errors=True)
            removed.append(key)
    return removed


def _remove_stale_temporaries(cache_dir: Path) -> None:
    """Delete leftovers of killed writers in the cache root (under the manifest lock: the
    manifest's temporaries; other files only when old). Case folders are cleaned by the job that
    holds the case's lock (:func:`voxssl.data.cache.write_case`)."""
    now = time.time()
    removed = 0
    for path in cache_dir.glob(".tmp-*"):
        try:
            stale = path.name.startswith(".tmp-manifest-") or (
                now - path.stat().st_mtime > _STALE_TEMPORARY_S
            )
            if stale:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d temporary files left by an interrupted run in %s", removed, cache_dir)


def _remove_stale_locks(cache_dir: Path, sources: list[SourceConfig]) -> None:
    """Lock files of a killed run stay behind (empty; the kernel released their lock): remove
    those nobody holds. Taking a lock without waiting and releasing it deletes its file."""
    for source in sources:
        for path in (cache_dir / source.name).glob(".*.lock"):
            with file_lock(path, blocking=False):
                pass


def _check_source_names(sources: list[SourceConfig], recipe_file: str) -> None:
    seen: dict[str, int] = {}
    for index, source in enumerate(sources):
        if source.name in seen:
            raise ConfigError(
                f"{recipe_file}: data.sources.{index}.name {source.name!r} is also the name of "
                f"data.sources.{seen[source.name]}; give each source its own name (it is the cache sub-folder)"
            )
        if not source.name or "/" in source.name or source.name.startswith("."):
            raise ConfigError(
                f"{recipe_file}: data.sources.{index}.name {source.name!r} is not a valid folder name"
            )
        seen[source.name] = index


def _path_fingerprint(path: Path) -> list[int] | None:
    try:
        if path.is_dir():
            entries = sorted(p for p in path.iterdir() if p.is_file())
            stats = [p.stat() for p in entries]
            digest = hashlib.sha256(
                "".join(
                    f"{p.name}:{s.st_size}:{s.st_mtime_ns};"
                    for p, s in zip(entries, stats, strict=True)
                ).encode()
            )
            return [sum(s.st_size for s in stats), int(digest.hexdigest()[:15], 16)]
        stat = path.stat()
        return [stat.st_size, stat.st_mtime_ns]
    except OSError:
        return None  # missing input: never matches a cached entry; the reader reports it


def _present_ids(label) -> list[int]:
    import numpy as np

    present = np.zeros(256, dtype=bool)
    present[label.ravel()] = True  # faster than bincount/unique on uint8
    return [int(v) for v in np.flatnonzero(present) if v not in (0, 255)]


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


__all__ = [
    "CaseFailure",
    "Summary",
    "fingerprint",
    "params_hash",
    "preprocess_case",
    "run_preprocess",
]
