"""``voxssl preprocess``: every case of every recipe source -> the cache (see :mod:`voxssl.data.cache`).

* Skips cases already in the manifest whose source fingerprint (size + mtime of image, channels
  and label) and parameter hash match and whose files are present; redoes the others.
* Before a case is (re)written its manifest entry is removed, so a run killed mid-way never leaves
  an entry pointing at half-new files; the entry is added (by the parent, the only writer of the
  manifest) after the worker has written every file of the case, and the manifest is rewritten
  atomically every few seconds and at the end. A failed case's folder is deleted.
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
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
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

log = logging.getLogger(__name__)


#: Seconds between manifest rewrites during a run (and once at the end).
_MANIFEST_WRITE_INTERVAL_S = 5.0


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
    _remove_leftovers(cache_dir, data_cfg.sources)
    summary = Summary(cache_dir=cache_dir)
    manifest = cache_format.read_manifest(cache_dir)
    summary.removed = _drop_vanished_cases(
        manifest, data_cfg.sources, {job.key for job in jobs}, cache_dir
    )
    todo = []
    for job in jobs:
        if _is_up_to_date(manifest["cases"].get(job.key), job, cache_dir):
            summary.skipped.append(job.key)
        else:
            manifest["cases"].pop(job.key, None)
            todo.append(job)
    cache_format.write_manifest(cache_dir, manifest)
    if todo:
        log.info(
            "preprocessing %d of %d cases into %s (%d up to date)",
            len(todo),
            len(jobs),
            cache_dir,
            len(summary.skipped),
        )
    _run_jobs(todo, manifest, cache_dir, summary, max(1, int(data_cfg.num_workers)), progress)
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


def _run_jobs(
    todo: list[_Job],
    manifest: dict,
    cache_dir: Path,
    summary: Summary,
    workers: int,
    progress: bool,
) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc="preprocess", unit="case", disable=not progress or not todo)
    last_write = time.monotonic()

    def record(job: _Job, outcome: tuple[str, Any]) -> None:
        nonlocal last_write
        status, value = outcome
        if status == "ok":
            manifest["cases"][job.key] = value
            summary.processed.append(job.key)
            # Rewriting the whole manifest after every case is quadratic for thousands of cases:
            # at most every few seconds; a crash loses (and redoes) only the cases since then.
            if time.monotonic() - last_write > _MANIFEST_WRITE_INTERVAL_S:
                cache_format.write_manifest(cache_dir, manifest)
                last_write = time.monotonic()
        else:
            path, reason = value
            summary.failed.append(_failure(job, path, reason))
            shutil.rmtree(job.case_dir, ignore_errors=True)  # no partial or stale output
            log.error("%s failed: %s", job.key, reason)
        bar.update(1)

    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                record(job, _run_job(job))
            return
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
            pending: dict[Future, _Job] = {pool.submit(_run_job, job): job for job in todo}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    job = pending.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as err:  # a worker that died (out of memory, killed)
                        outcome = (
                            "failed",
                            (
                                str(job.case.image),
                                f"worker process failed: {type(err).__name__}: {err}",
                            ),
                        )
                    record(job, outcome)
    finally:
        bar.close()
        cache_format.write_manifest(cache_dir, manifest)


def _run_job(job: _Job) -> tuple[str, Any]:
    """Worker: preprocess one case and write its files. Never raises for a bad input."""
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
    """Remove entries (and files) of a recipe source's cases that the source no longer has."""
    names = {source.name for source in sources}
    removed = []
    for key, entry in list(manifest["cases"].items()):
        if entry.get("source") in names and key not in keys:
            del manifest["cases"][key]
            shutil.rmtree(cache_dir / entry["directory"], ignore_errors=True)
            removed.append(key)
    return removed


def _remove_leftovers(cache_dir: Path, sources: list[SourceConfig]) -> None:
    """Delete ``.tmp-*`` files that a killed run left in the cache root and in case folders."""
    removed = cache_format.remove_temporaries(cache_dir)
    for source in sources:
        source_dir = cache_dir / source.name
        if source_dir.is_dir():
            removed += sum(
                cache_format.remove_temporaries(d) for d in source_dir.iterdir() if d.is_dir()
            )
    if removed:
        log.info("removed %d temporary files left by an interrupted run in %s", removed, cache_dir)


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
