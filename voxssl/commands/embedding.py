"""``voxssl embed``, ``voxssl explore`` and ``voxssl one-shot``: use the voxel embedding directly."""

from __future__ import annotations

from pathlib import Path

import typer

WEIGHTS_HELP = (
    "Backbone weights: a voxssl .safetensors file (backbone, pretraining or segmentation), a run "
    "or release folder, a released model name (`voxssl weights list`) or a vox2vec / "
    "hierarchical-dense-ssl .pt."
)
MODALITY_HELP = (
    "Modality of the scans (default: the weights'). Another modality gets its default intensity "
    "normalisation at the weights' spacing (e.g. CT weights on MR)."
)
DEVICE_HELP = "auto | cpu | cuda"


def _check_choice(value: str | None, choices: tuple[str, ...], option: str) -> None:
    from voxssl.errors import ConfigError

    if value is not None and value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, got {value!r}")


def _stride(value: str) -> int | str:
    from voxssl.embedding.compute import STRIDES
    from voxssl.errors import ConfigError

    if value == "auto":
        return value
    if value.isdigit() and int(value) in STRIDES:
        return int(value)
    raise ConfigError(
        f"--stride must be auto or one of {', '.join(map(str, STRIDES))}, got {value!r}"
    )


def embed(
    images: list[Path] = typer.Argument(..., help="NIfTI files or DICOM series folders."),
    weights: str = typer.Option(..., "--weights", "-w", help=WEIGHTS_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for one <name>/ folder per scan."),
    stride: str = typer.Option(
        "1",
        "--stride",
        help="One embedding per stride^3 block of the preprocessed grid (1, 2, 4, 8), or 'auto': "
        "the smallest stride that keeps the grid at or below 1 M voxels.",
    ),
    modality: str | None = typer.Option(None, "--modality", help=MODALITY_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Whole-volume voxel embeddings (float16, memory-mapped) with the geometry back to each scan.

    Re-running skips the scans already embedded with the same weights and settings.
    """
    from voxssl.embedding.embed import embed_files, load_embedder

    _check_choice(modality, ("ct", "mr"), "--modality")
    _check_choice(device, ("auto", "cpu", "cuda"), "--device")
    chosen = _stride(stride)
    embedder = load_embedder(weights, device=device, modality=modality)
    for folder in embed_files(embedder, images, out, stride=chosen, progress=not quiet):
        typer.echo(str(folder))


def explore(
    images: list[Path] = typer.Argument(
        ...,
        help="One or two scans (NIfTI files or DICOM folders), or embedding folders written by "
        "`voxssl embed` (used as they are).",
    ),
    weights: str | None = typer.Option(
        None, "--weights", "-w", help=WEIGHTS_HELP + " Not needed for embedding folders."
    ),
    embeddings: Path | None = typer.Option(
        None,
        "--embeddings",
        help="Where scans are embedded (reused when up to date). Default: "
        "$VOXSSL_HOME/embeddings/<weights sha256>/.",
    ),
    stride: str = typer.Option(
        "auto", "--stride", help="Embedding stride for scans (1, 2, 4, 8 or auto: <= 1 M voxels)."
    ),
    pca: int = typer.Option(
        32,
        "--pca",
        help="Compare embeddings in this many PCA dimensions (0: the full embedding).",
    ),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0: any free port)."),
    modality: str | None = typer.Option(None, "--modality", help=MODALITY_HELP),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    open_browser: bool = typer.Option(
        False, "--open", help="Open the page in the default browser."
    ),
) -> None:
    """A local web page to look at the voxel embedding: click a voxel, see its similarity map over
    the scan (and the best-matching voxel of a second scan)."""
    from voxssl.explore.launch import serve_forever

    _check_choice(modality, ("ct", "mr"), "--modality")
    _check_choice(device, ("auto", "cpu", "cuda"), "--device")
    serve_forever(
        images,
        weights=weights,
        embeddings=embeddings,
        stride=_stride(stride),
        components=pca or None,
        port=port,
        modality=modality,
        device=device,
        open_browser=open_browser,
        echo=typer.echo,
    )


def one_shot(
    queries: list[Path] = typer.Argument(
        ..., help="Scans to segment (NIfTI files or DICOM folders)."
    ),
    weights: str = typer.Option(..., "--weights", "-w", help=WEIGHTS_HELP),
    support: tuple[Path, Path] = typer.Option(
        ...,
        "--support",
        help="The one labelled scan: IMAGE LABEL (label ids 1..255, kept as they are).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output folder for <name>_seg.nii.gz label maps."
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        help="Label ids to segment, e.g. 1,2,3,6 (default: every id of the support label).",
    ),
    method: str = typer.Option(
        "both", "--method", help="prototype | neighbours | both (the mean of the two)."
    ),
    cca: str = typer.Option(
        "3d", "--cca", help="3d: keep each organ's most confident connected component; none."
    ),
    temperature: float = typer.Option(
        0.05, "--temperature", help="Softmax temperature on cosines."
    ),
    neighbours: int = typer.Option(
        10, "--neighbours", help="Support voxels voting per query voxel."
    ),
    stride: str = typer.Option(
        "auto", "--stride", help="Embedding stride (1, 2, 4, 8 or auto: <= 1 M voxels per scan)."
    ),
    embeddings: Path | None = typer.Option(
        None,
        "--embeddings",
        help="Where scans are embedded (default: $VOXSSL_HOME/embeddings/<weights>).",
    ),
    modality: str | None = typer.Option(None, "--modality", help=MODALITY_HELP),
    query_modality: str | None = typer.Option(
        None,
        "--query-modality",
        help="Modality of the queries when it differs from the support's (CT -> MR).",
    ),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment scans from ONE labelled scan by matching voxel embeddings (no training); label maps
    in each scan's own grid and affine."""
    from voxssl.embedding.oneshot import OneShotConfig, one_shot_files
    from voxssl.errors import ConfigError

    _check_choice(modality, ("ct", "mr"), "--modality")
    _check_choice(query_modality, ("ct", "mr"), "--query-modality")
    _check_choice(device, ("auto", "cpu", "cuda"), "--device")
    ids = None
    if classes is not None:
        try:
            ids = [int(c) for c in classes.replace(" ", "").split(",") if c]
        except ValueError:
            raise ConfigError(f"--classes must be label ids like 1,2,3, got {classes!r}") from None
    cfg = OneShotConfig(method=method, cca=cca, temperature=temperature, neighbours=neighbours)
    cfg.check()
    written = one_shot_files(
        weights,
        support[0],
        support[1],
        queries,
        out,
        classes=ids,
        cfg=cfg,
        embeddings=embeddings,
        stride=_stride(stride),
        modality=modality,
        query_modality=query_modality,
        device=device,
        progress=not quiet,
    )
    for path in written:
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    app.command("embed")(embed)
    app.command("explore")(explore)
    app.command("one-shot")(one_shot)
