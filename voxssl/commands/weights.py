"""``voxssl weights list | info | download | path | import | export``: pretrained weights."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from voxssl.commands.common import Group, IntTriple, command, flag, triple_option

if TYPE_CHECKING:
    from voxssl.hub.channels import AdaptChannels

weights_app = typer.Typer(
    help="Pretrained weights: list the registry, download (verified, resumable), import published "
    "checkpoints (vox2vec, hierarchical-dense-ssl), export releases and MONAI bundles. The cache is "
    "$VOXSSL_HOME (default ~/.cache/voxssl).",
    no_args_is_help=True,
    cls=Group,
)


class ImportFormat(str, Enum):
    vox2vec = "vox2vec"
    hierarchical = "hierarchical"
    voxssl = "voxssl"


class AdaptChannelsChoice(str, Enum):
    repeat = "repeat"
    refuse = "refuse"


def _adapt_mode(choice: AdaptChannelsChoice) -> AdaptChannels:
    return "repeat" if choice is AdaptChannelsChoice.repeat else "refuse"


class ModalityChoice(str, Enum):
    ct = "ct"
    mr = "mr"


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


def info(
    name: str = typer.Argument(
        ...,
        metavar="NAME|FILE",
        help="A registry name, or a voxssl .safetensors file / run or release folder.",
    ),
    as_json: bool = flag("--json", help="Print the raw plan (JSON) of a weights file."),
) -> None:
    """Everything known about a model: source, checksum, architecture, preprocessing, licence, card."""
    import json

    from voxssl.hub.registry import load_registry

    path = Path(name).expanduser()
    if path.exists():
        from voxssl.hub.resolve import resolve_weights
        from voxssl.models.weights import read_plan

        weights = Path(resolve_weights(path))
        plan = read_plan(weights)
        if as_json:
            typer.echo(json.dumps(json.loads(plan.to_json()), indent=2, sort_keys=True))
        else:
            typer.echo("\n".join(describe_weights_file(weights, plan)))
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


def describe_weights_file(path: Path, plan) -> list[str]:
    """A readable summary of a voxssl weights file (``voxssl weights info FILE``)."""
    arch, prep, extra = plan.architecture, plan.preprocessing, plan.extra
    lines = [
        f"file:          {path} ({path.stat().st_size / 1e6:.1f} MB, {_parameter_count(path)})",
        f"kind:          {plan.kind} (voxssl {plan.voxssl_version}, plan format {plan.format_version})",
    ]
    levels = f"{arch.get('base_channels')} channels x {arch.get('num_levels')} levels"
    projection = arch.get("projection")
    if projection and projection != "none":
        levels += f", each projected to {arch.get('projection_channels')} ({projection})"
    lines.append(
        f"architecture:  {arch.get('preset', '?')} FPN, {levels}, "
        f"{arch.get('in_channels')} input channel(s), {arch.get('norm', '?')} norm"
    )
    spacing = prep.get("spacing")
    text = f"{prep.get('modality', '?')}"
    if spacing:
        text += f", {' x '.join(f'{s:g}' for s in spacing)} mm"
    window = (prep.get("intensity") or {}).get("window_hu")
    if window:
        text += f", window {window[0]:g} .. {window[1]:g} HU"
    lines.append(f"preprocessing: {text}")
    recipe = plan.recipe or {}
    trained = [f"recipe '{recipe['name']}'"] if recipe.get("name") else []
    steps = (recipe.get("pretrain") or {}).get("steps")
    if plan.kind == "backbone" and steps:
        trained.append(f"{steps} pretraining steps")
    if extra.get("init"):
        trained.append(f"initialised from {extra['init']}")
    if trained:
        lines.append(f"trained:       {', '.join(trained)}")
    segmentation = extra.get("segmentation")
    if isinstance(segmentation, dict):
        from voxssl.vocabulary import organ_name

        classes = ", ".join(organ_name(c) for c in segmentation.get("classes", []))
        lines.append(f"classes:       {classes}")
        lines.append(
            f"head:          {segmentation.get('head_kind')}, {segmentation.get('loss')} loss, "
            f"threshold {segmentation.get('threshold')}, window "
            f"{'x'.join(str(v) for v in segmentation.get('sw_roi_size', []))}"
        )
    lines.append("plan (JSON):   voxssl weights info FILE --json")
    return lines


def _parameter_count(path: Path) -> str:
    """Parameters of a safetensors file, from its header (no tensor is read)."""
    import json
    import math
    import struct

    with open(path, "rb") as handle:
        (size,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(size))
    total = sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    return f"{total / 1e6:.2f} M parameters"


def download(
    name: str = typer.Argument(
        ..., metavar="NAME", help="Registry name (see `voxssl weights list`).", show_default=False
    ),
    file: Path | None = typer.Option(
        None,
        "--file",
        help="Use this manually downloaded file instead of the network (checked, then cached).",
    ),
    quiet: bool = flag("--quiet", "-q", help="No progress bar."),
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


def path(
    name: str = typer.Argument(..., metavar="NAME", help="Registry name.", show_default=False),
) -> None:
    """Print the cached voxssl weights of a registry model (checked against their sha256; no
    download; fails if absent or changed)."""
    from voxssl.hub.registry import load_registry
    from voxssl.hub.resolve import cached_registry_weights

    typer.echo(str(cached_registry_weights(load_registry().get(name))))


def import_(
    file: Path = typer.Argument(
        ...,
        exists=True,
        metavar="FILE",
        help="A published checkpoint (.pt / .ckpt) or a voxssl .safetensors file.",
        show_default=False,
    ),
    format: ImportFormat = typer.Option(..., "--format", "-f", help="Layout of FILE."),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        metavar="FILE",
        help="Output .safetensors (default: FILE with that suffix).",
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
        _import_voxssl(file, out, in_channels, _adapt_mode(adapt_channels))
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
        adapt_channels=_adapt_mode(adapt_channels),
        **options,
    )
    typer.echo(f"source sha256 {result.source_sha256}")
    typer.echo(str(result.path))


def _import_voxssl(
    file: Path, out: Path | None, in_channels: int | None, adapt_channels: AdaptChannels
) -> None:
    """Check a voxssl weights file (it loads through its plan) and optionally adapt/copy it."""
    import shutil

    from voxssl.hub.resolve import resolve_weights
    from voxssl.models.weights import load_backbone

    weights = resolve_weights(file, in_channels=in_channels, adapt_channels=adapt_channels)
    load_backbone(weights)
    if out is not None:
        from voxssl.utils.atomic import atomic_path

        with atomic_path(out) as tmp:
            shutil.copyfile(weights, tmp)
        weights = out
    typer.echo(str(weights))


def export(
    checkpoint: str = typer.Argument(
        ...,
        metavar="WEIGHTS",
        help="Weights: a checkpoint or release folder, a .safetensors file, a registry name.",
        show_default=False,
    ),
    out: Path = typer.Option(..., "--out", "-o", metavar="DIR", help="Folder to create."),
    monai_bundle: bool = flag(
        "--monai-bundle", help="Write a MONAI bundle instead of a release folder."
    ),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the folder name)."),
    license: str = typer.Option(
        "unspecified", "--license", help="Licence of the weights (release card)."
    ),
    description: str = typer.Option("", "--description", help="One paragraph for the model card."),
    citation: str = typer.Option("", "--citation", help="How to cite these weights."),
    roi: IntTriple | None = triple_option(
        "--roi", int, "Bundle sliding-window size X,Y,Z (default: the training patch)."
    ),
    overwrite: bool = flag("--overwrite", help="Replace an existing folder."),
) -> None:
    """Write a release folder (model.safetensors + plan.json + README.md) or a MONAI bundle."""
    if monai_bundle:
        from voxssl.eval.monai_bundle import export_monai_bundle

        roi_size = list(roi) if roi is not None else None
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
    for name, function, examples in (
        ("list", list_weights, ["voxssl weights list"]),
        (
            "info",
            info,
            [
                "voxssl weights info vox2vec-contrastive",
                "voxssl weights info runs/probe/fold0/model.safetensors --json",
            ],
        ),
        (
            "download",
            download,
            [
                "voxssl weights download hierarchical-ct",
                "voxssl weights download vox2vec-contrastive --file ~/Downloads/vox2vec.pt",
            ],
        ),
        ("path", path, ["voxssl weights path hierarchical-ct"]),
        (
            "import",
            import_,
            [
                "voxssl weights import vox2vec.pt --format vox2vec --out vox2vec.safetensors",
                "voxssl weights import runs/ct/backbone.safetensors --format voxssl --in-channels 4 "
                "--adapt-channels repeat --out dixon.safetensors",
            ],
        ),
        (
            "export",
            export,
            [
                "voxssl weights export runs/ct/backbone.safetensors --out releases/my-ct --license CC-BY-4.0",
                "voxssl weights export runs/probe/fold0/model.safetensors --out bundles/liver --monai-bundle",
            ],
        ),
    ):
        command(weights_app, name, function, examples)
    app.add_typer(weights_app, name="weights")
