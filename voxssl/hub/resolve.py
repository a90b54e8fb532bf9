"""``--weights SPEC`` -> one voxssl ``.safetensors`` file that
:func:`voxssl.models.weights.load_backbone` reads.

``SPEC`` may be, tried in this order:

1. a folder: a release (``model.safetensors`` + ``plan.json`` + ``README.md``), a training
   checkpoint folder (``model.safetensors`` + ``state.pt``), or a run folder (its latest
   ``checkpoints/step_*``);
2. a voxssl ``.safetensors`` file (it must carry a plan);
3. another file: a vox2vec or hierarchical-dense-ssl checkpoint, converted once into the cache
   (``$VOXSSL_HOME/converted/<sha256>/``) and reused;
4. a registry name (``voxssl weights list``): downloaded (or found in the cache) and converted.

Typical use in a command::

    path = resolve_weights(args.weights, in_channels=cfg.model.in_channels,
                           adapt_channels=cfg.finetune.adapt_channels)
    backbone, plan = load_backbone(path, expect={"preprocessing.modality": "ct"})
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from voxssl.checkpoint_layout import latest_checkpoint
from voxssl.config.model import model_config_from_dict
from voxssl.errors import CheckpointError
from voxssl.hub.channels import AdaptChannels, adapt_input_channels
from voxssl.hub.convert import ForeignFormat, import_foreign, read_torch_checkpoint
from voxssl.hub.download import (
    DownloadRecord,
    check_cached,
    check_local_file,
    read_record,
    write_record,
)
from voxssl.hub.errors import ConversionError, DownloadError, RegistryError
from voxssl.hub.fetch import cached_path, fetch
from voxssl.hub.registry import Registry, RegistryEntry, load_registry
from voxssl.hub.weights_cache import converted_dir, sha256_of, weights_dir
from voxssl.models.plan import Plan
from voxssl.models.weights import load_weights, read_plan, save_weights, strip_prefixes

logger = logging.getLogger(__name__)

MODEL_FILE = "model.safetensors"
PLAN_FILE = "plan.json"
CONVERTED_FILE = "model.safetensors"
_FOREIGN_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")


def resolve_weights(
    spec: str | os.PathLike,
    *,
    in_channels: int | None = None,
    adapt_channels: AdaptChannels = "refuse",
    registry: Registry | None = None,
    progress: bool = True,
    foreign_format: ForeignFormat | None = None,
) -> Path:
    """Turn a ``--weights`` value into a voxssl ``.safetensors`` path (see the module docstring).

    Args:
        spec: folder, file or registry name.
        in_channels: input channels of the model the weights go into; when the weights take a
            different number, ``adapt_channels`` decides (``"repeat"``: an adapted copy is written
            to the cache and returned; ``"refuse"``: :class:`ConversionError`).
        registry: the registry to look names up in (default: :func:`load_registry`).
        progress: show download progress bars.
        foreign_format: ``"vox2vec"`` or ``"hierarchical"`` for a foreign file (default: detected
            from its structure).
    """
    path = _resolve_source(spec, registry, progress, foreign_format)
    if in_channels is not None:
        path = _with_input_channels(path, in_channels, adapt_channels)
    return path


def _resolve_source(
    spec: str | os.PathLike,
    registry: Registry | None,
    progress: bool,
    foreign_format: ForeignFormat | None,
) -> Path:
    text = str(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        return weights_in_folder(path)
    if path.is_file():
        if path.suffix == ".safetensors":
            _require_plan(path)
            return path
        return import_cached(path, foreign_format)
    if os.sep in text or text.endswith((".safetensors", *_FOREIGN_SUFFIXES)):
        raise ConversionError(f"weights not found: {path} (no such file or folder)")
    registry = registry or load_registry()
    try:
        entry = registry.get(text)
    except RegistryError as err:
        raise RegistryError(
            f"--weights '{text}' is not a file, a folder or a registry name: {err}"
        ) from None
    return registry_weights(entry, progress=progress)


def weights_in_folder(folder: Path) -> Path:
    """The weights file of a release, checkpoint or run folder."""
    direct = folder / MODEL_FILE
    if direct.is_file():
        _require_plan(direct)
        return direct
    latest = latest_checkpoint(folder)
    if latest is not None:
        logger.info("using the latest checkpoint of %s: %s", folder, latest.name)
        _require_plan(latest / MODEL_FILE)
        return latest / MODEL_FILE
    candidates = sorted(folder.glob("*.safetensors"))
    if len(candidates) == 1:
        _require_plan(candidates[0])
        return candidates[0]
    found = ", ".join(p.name for p in candidates) or "no .safetensors file"
    raise ConversionError(
        f"{folder}: not a weights folder: expected {MODEL_FILE} (a release or checkpoint folder) or "
        f"checkpoints/step_*/ (a run folder); found {found}"
    )


def registry_weights(
    entry: RegistryEntry, *, progress: bool = True, local_file: str | os.PathLike | None = None
) -> Path:
    """Fetch a registry entry and return its voxssl weights (converted once, then cached).

    With ``local_file`` (``weights download NAME --file PATH``) the file is checked (registry
    sha256 or the recorded pin) and converted first; only a file that converts is copied into
    the cache and recorded.
    """
    converted = weights_dir(entry.name) / CONVERTED_FILE
    if local_file is not None:
        local_file = Path(local_file)
        source_sha = check_local_file(local_file, cached_path(entry), entry.sha256, entry.size)
        if entry.format == "voxssl":
            _require_plan(local_file)
        elif not (_is_conversion_of(converted, source_sha) and _converted_intact(converted)):
            _convert(entry, local_file, converted, source_sha)
        downloaded = fetch(entry, progress=progress, local_file=local_file)
        return downloaded if entry.format == "voxssl" else converted
    downloaded = fetch(entry, progress=progress)
    if entry.format == "voxssl":
        _require_plan(downloaded)
        return downloaded
    record = read_record(downloaded)  # fetch() has just verified the file against it
    source_sha = record.sha256 if record is not None else sha256_of(downloaded)
    if _is_conversion_of(converted, source_sha) and _converted_intact(converted):
        return converted
    _convert(entry, downloaded, converted, source_sha)
    return converted


def cached_registry_weights(entry: RegistryEntry) -> Path:
    """The cached voxssl weights of a registry entry, checked but never changed or downloaded.

    The downloaded file must match its pin (registry sha256 or the recorded one) and, for a
    foreign format, the converted file must be the conversion of that file and match its own
    record. Raises :class:`~voxssl.hub.errors.ChecksumMismatchError` for a changed file and
    :class:`~voxssl.hub.errors.DownloadError` for a missing one.
    """
    downloaded = cached_path(entry)
    hint = f"run 'voxssl weights download {entry.name}'"
    if not downloaded.is_file():
        raise DownloadError(f"'{entry.name}' is not in the cache ({downloaded}); {hint}")
    record = check_cached(downloaded, entry.sha256)
    if entry.format == "voxssl":
        return downloaded
    converted = weights_dir(entry.name) / CONVERTED_FILE
    if not _is_conversion_of(converted, record.sha256):
        raise DownloadError(f"'{entry.name}' is downloaded but not converted ({converted}); {hint}")
    check_cached(converted, None)
    return converted


def _convert(entry: RegistryEntry, source: Path, converted: Path, source_sha: str) -> None:
    """Convert a registry entry's foreign checkpoint and record the result's sha256."""
    fmt = entry.format
    if fmt == "voxssl":
        raise ValueError(f"registry entry {entry.name}: voxssl weights need no conversion")
    logger.info("converting %s (%s layout) to voxssl weights", entry.name, fmt)
    import_foreign(
        source,
        converted,
        fmt,
        architecture=entry.architecture,
        preprocessing=entry.preprocessing,
        modality=entry.modality,
        provenance={
            "registry_name": entry.name,
            "license": entry.license,
            "urls": list(entry.urls),
        },
    )
    write_record(
        converted,
        DownloadRecord(
            sha256=sha256_of(converted),
            size=converted.stat().st_size,
            source=f"conversion of {entry.filename} (sha256 {source_sha})",
            sha256_from="computed",
        ),
    )


def _converted_intact(converted: Path) -> bool:
    """The converted file still has the sha256 recorded when it was written."""
    record = read_record(converted)
    return record is not None and sha256_of(converted) == record.sha256


def import_cached(path: Path, foreign_format: ForeignFormat | None = None, **options: Any) -> Path:
    """Convert a foreign checkpoint once into ``$VOXSSL_HOME/converted/<sha256>/`` and reuse it."""

    source_sha = sha256_of(path)
    fmt = foreign_format or detect_format(path)
    out = converted_dir(source_sha) / f"{fmt}-{CONVERTED_FILE}"
    if _is_conversion_of(out, source_sha):
        return out
    known = _registry_entry_for_sha(source_sha)
    if known is not None and known.format == fmt:
        options = {
            "architecture": known.architecture,
            "preprocessing": known.preprocessing,
            "modality": known.modality,
            "provenance": {"registry_name": known.name},
            **options,
        }
    elif fmt == "hierarchical" and "modality" not in options:
        logger.warning(
            "%s: a hierarchical-dense-ssl checkpoint says nothing about its modality or preprocessing; use "
            "'voxssl weights download hierarchical-ct|hierarchical-mr --file %s' to record them",
            path,
            path,
        )
    import_foreign(path, out, fmt, **options)
    return out


def detect_format(path: Path) -> ForeignFormat:
    """``"hierarchical"`` for ``{"state_dict": ...}``, ``"vox2vec"`` for a plain state dict."""

    checkpoint = read_torch_checkpoint(path)
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        return "hierarchical"
    if isinstance(checkpoint, dict) and any(
        str(k).endswith("first_conv.weight") for k in checkpoint
    ):
        return "vox2vec"
    raise ConversionError(
        f"{path}: not a vox2vec or hierarchical-dense-ssl checkpoint (no 'first_conv.weight' and no "
        "'state_dict'); for other layouts give --format"
    )


def _with_input_channels(path: Path, in_channels: int, adapt_channels: AdaptChannels) -> Path:
    """``path`` itself when it has ``in_channels`` inputs, else an adapted copy (or an error)."""

    plan = read_plan(path)
    have = int(plan.architecture.get("in_channels", 1))
    if have == in_channels:
        return path
    out = converted_dir(sha256_of(path)) / f"in{in_channels}-{CONVERTED_FILE}"
    if out.is_file():
        return out
    state, plan = load_weights(path)
    state = strip_prefixes(state)
    state = adapt_input_channels(state, in_channels, adapt_channels, source=str(path))
    config = model_config_from_dict(
        {**plan.architecture, "in_channels": in_channels}, source=str(path)
    )
    preprocessing = {**plan.preprocessing, "in_channels": in_channels}
    extra = {
        **plan.extra,
        "adapted_channels": f"{have}->{in_channels} ({adapt_channels})",
        "adapted_from": str(path),
    }
    adapted = Plan.for_model(
        config, preprocessing=preprocessing, recipe=plan.recipe, kind="backbone", extra=extra
    )
    save_weights(out, state, adapted)
    return out


def _require_plan(path: Path) -> None:

    read_plan(path)  # CheckpointError naming the file when it is not a voxssl weights file


def _is_conversion_of(converted: Path, source_sha256: str) -> bool:
    if not converted.is_file():
        return False

    try:
        return read_plan(converted).extra.get("source_sha256") == source_sha256
    except CheckpointError:
        return False


def _registry_entry_for_sha(sha256: str) -> RegistryEntry | None:
    """A registry entry whose published (or recorded) sha256 is ``sha256``."""

    try:
        registry = load_registry()
    except RegistryError:
        return None
    for entry in registry.models:
        record = read_record(cached_path(entry))
        if entry.sha256 == sha256 or (record is not None and record.sha256 == sha256):
            return entry
    return None


__all__ = [
    "cached_registry_weights",
    "detect_format",
    "import_cached",
    "registry_weights",
    "resolve_weights",
    "weights_in_folder",
]
