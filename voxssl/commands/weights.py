"""``voxssl weights list | info | download | path | import | export``: pretrained weights."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

weights_app = typer.Typer(
    help="Pretrained weights: list the registry, download (verified, resumable), import published "
    "checkpoints (vox2vec, hierarchical-dense-ssl), export releases and MONAI bundles. The cache is "
    "$VOXSSL_HOME (default ~/.cache/voxssl).",
    no_args_is_help=True,
)


class ImportFormat(str, Enum):
    vox2vec = "vox2vec"
    hierarchical = "hierarchical"
    voxssl = "voxssl"


class AdaptChannelsChoice(str, Enum):
    repeat = "repeat"
    refuse = "refuse"


class ModalityChoice(str, Enum):
    ct = "ct"
    mr = "mr"


@weights_app.command("list")
def list_weights() -> None:
    """The models of the registry, and whether each is in the cache."""
    from voxssl.hub.fetch import cached_path
    from voxssl.hub.registry import load_registry

    registry = load_registry()
    rows = [("NAME", "MODALITY", "FORMAT", "CACHED", "SHA256", "LICENCE")]
    for entry in registry.models:
        cached = "yes" if cached_path(entry).is_file() else ("manual" if not entry.urls else "no")
        rows.append(
            (
                entry.name,
                entry.modality,
                entry.format,
                cached,
                "published" if entry.sha256 else "unknown",
                _short(entry.license, 40),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    typer.echo(f"\nregistry: {registry.source}")


@weights_app.command("info")
def info(
    name: str = typer.Argument(
        ..., help="A registry name, or a voxssl .safetensors file / release folder."
    ),
) -> None:
    """Everything known about a model: source, checksum, architecture, preprocessing, licence, card."""
    import json

    from voxssl.hub.registry import load_registry

    path = Path(name).expanduser()
    if path.exists():
        from voxssl.hub.resolve import resolve_weights
        from voxssl.models.weights import read_plan

        weights = resolve_weights(path)
        typer.echo(f"file: {weights}")
        typer.echo(json.dumps(json.loads(read_plan(weights).to_json()), indent=2, sort_keys=True))
        return
    from voxssl.hub.download import read_record
    from voxssl.hub.fetch import cached_path

    registry = load_registry()
    entry = registry.get(name)
    record = read_record(cached_path(entry))
    lines = [
        f"name:          {entry.name}",
        f"description:   {entry.description}",
        f"modality:      {entry.modality}",
        f"format:        {entry.format}",
        f"file:          {entry.filename}" + (f" ({entry.size} bytes)" if entry.size else ""),
        *[f"url:           {url}" for url in entry.urls],
        *([f"manual:        {entry.manual_download}"] if entry.manual_download else []),
        f"revision:      {entry.revision or '-'}"
        + ("" if entry.revision_verified or not entry.revision else " (unverified)"),
        f"sha256:        {entry.sha256 or 'unknown (not published)'}",
        f"cached:        {cached_path(entry) if record else 'no'}"
        + (f"  sha256 {record.sha256} ({record.sha256_from})" if record else ""),
        f"architecture:  {json.dumps(entry.architecture)}",
        f"preprocessing: {json.dumps(entry.preprocessing)}",
        f"licence:       {entry.license}",
        f"citation:      {entry.citation}",
        f"card:          {registry.card_path(entry)}",
        *[f"unverified:    {item}" for item in entry.unverified],
    ]
    typer.echo("\n".join(lines))


@weights_app.command("download")
def download(
    name: str = typer.Argument(..., help="Registry name (see `voxssl weights list`)."),
    file: Path | None = typer.Option(
        None,
        "--file",
        help="Use this manually downloaded file instead of the network (checked, then cached).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Download (or add with --file), verify and convert a registry model into the cache."""
    from voxssl.hub.download import read_record
    from voxssl.hub.fetch import cached_path
    from voxssl.hub.registry import load_registry
    from voxssl.hub.resolve import registry_weights

    entry = load_registry().get(name)
    weights = registry_weights(entry, progress=not quiet, local_file=file)
    record = read_record(cached_path(entry))
    if record is not None:
        origin = (
            "matches the registry"
            if record.sha256_from == "registry"
            else (
                "computed: the registry has none; compare it with a trusted source and add it to the registry"
            )
        )
        typer.echo(f"sha256 {record.sha256} ({origin})")
    typer.echo(str(weights))


@weights_app.command("path")
def path(name: str = typer.Argument(..., help="Registry name.")) -> None:
    """Print the cached voxssl weights of a registry model (checked against their sha256; no
    download; fails if absent or changed)."""
    from voxssl.hub.registry import load_registry
    from voxssl.hub.resolve import cached_registry_weights

    typer.echo(str(cached_registry_weights(load_registry().get(name))))


@weights_app.command("import")
def import_(
    file: Path = typer.Argument(
        ..., help="A published checkpoint (.pt / .ckpt) or a voxssl .safetensors file."
    ),
    format: ImportFormat = typer.Option(..., "--format", "-f", help="Layout of FILE."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output .safetensors (default: FILE with that suffix)."
    ),
    modality: ModalityChoice | None = typer.Option(
        None,
        "--modality",
        help="Images the weights expect (vox2vec: ct); voxssl's default preprocessing for it is recorded.",
    ),
    like: str | None = typer.Option(
        None,
        "--like",
        help="Take architecture, modality and preprocessing from this registry entry.",
    ),
    in_channels: int | None = typer.Option(
        None, "--in-channels", help="Input channels of the target model."
    ),
    adapt_channels: AdaptChannelsChoice = typer.Option(
        AdaptChannelsChoice.refuse,
        "--adapt-channels",
        help="When --in-channels differs from the weights': repeat the first conv (scaled by 1/C) or refuse.",
    ),
) -> None:
    """Convert a published checkpoint into voxssl weights (safetensors + plan), checked key by key."""
    from voxssl.hub.convert import import_foreign

    if format is ImportFormat.voxssl:
        _import_voxssl(file, out, in_channels, adapt_channels.value)
        return
    options: dict = {}
    if like is not None:
        from voxssl.hub.registry import load_registry

        entry = load_registry().get(like)
        options = {
            "architecture": entry.architecture,
            "preprocessing": entry.preprocessing,
            "modality": entry.modality,
            "provenance": {"registry_name": entry.name},
        }
    if modality is not None:
        options["modality"] = modality.value
    out = out or file.with_suffix(".safetensors")
    result = import_foreign(
        file,
        out,
        format.value,
        in_channels=in_channels,
        adapt_channels=adapt_channels.value,
        **options,
    )
    typer.echo(f"source sha256 {result.source_sha256}")
    typer.echo(str(result.path))


def _import_voxssl(
    file: Path, out: Path | None, in_channels: int | None, adapt_channels: str
) -> None:
    """Check a voxssl weights file (it loads through its plan) and optionally adapt/copy it."""
    import shutil

    from voxssl.hub.resolve import resolve_weights
    from voxssl.models.weights import load_backbone

    weights = resolve_weights(file, in_channels=in_channels, adapt_channels=adapt_channels)  # type: ignore[arg-type]
    load_backbone(weights)
    if out is not None:
        from voxssl.utils.atomic import atomic_path

        with atomic_path(out) as tmp:
            shutil.copyfile(weights, tmp)
        weights = out
    typer.echo(str(weights))


@weights_app.command("export")
def export(
    checkpoint: str = typer.Argument(
        ..., help="Weights: a checkpoint or release folder, a .safetensors file, a registry name."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create."),
    monai_bundle: bool = typer.Option(
        False, "--monai-bundle", help="Write a MONAI bundle instead of a release folder."
    ),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the folder name)."),
    license: str = typer.Option(
        "unspecified", "--license", help="Licence of the weights (release card)."
    ),
    description: str = typer.Option("", "--description", help="One paragraph for the model card."),
    citation: str = typer.Option("", "--citation", help="How to cite these weights."),
    roi: str | None = typer.Option(
        None, "--roi", help="Bundle sliding-window size X,Y,Z (default: the training patch)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
) -> None:
    """Write a release folder (model.safetensors + plan.json + README.md) or a MONAI bundle."""
    if monai_bundle:
        from voxssl.errors import ConfigError
        from voxssl.eval.monai_bundle import export_monai_bundle

        roi_size = None
        if roi is not None:
            try:
                roi_size = [int(v) for v in roi.split(",")]
            except ValueError:
                raise ConfigError(f"--roi must look like 128,128,32, got {roi!r}") from None
        written = export_monai_bundle(
            checkpoint, out, name=name, roi_size=roi_size, overwrite=overwrite
        )
        typer.echo(
            f"{written}\nrun: python -m monai.bundle run --config_file {written}/configs/inference.json "
            f"--bundle_root {written} --dataset_dir DIR_OF_NIFTIS --output_dir OUT"
        )
        return
    from voxssl.hub.export import export_release

    written = export_release(
        checkpoint,
        out,
        name=name,
        description=description,
        license=license,
        citation=citation,
        overwrite=overwrite,
    )
    typer.echo(str(written))


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def register(app: typer.Typer) -> None:
    app.add_typer(weights_app, name="weights")
