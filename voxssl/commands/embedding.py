"""``voxssl embed``, ``voxssl explore`` and ``voxssl one-shot``: use the voxel embedding directly."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from voxssl.commands.common import QUIET_OPTION, command, flag

#: ``--stride`` values (voxssl.embedding.compute.STRIDES, as text) and ``auto``.
Stride = Literal["auto", "1", "2", "4", "8"]
Device = Literal["auto", "cpu", "cuda"]
Modality = Literal["ct", "mr"]

WEIGHTS_HELP = (
    "Backbone weights: a voxssl .safetensors file (backbone, pretraining or segmentation), a run "
    "or release folder, a released model name (`voxssl weights list`) or a vox2vec / "
    "hierarchical-dense-ssl .pt."
)
MODALITY_HELP = (
    "Modality of the scans (default: the weights'). Another modality gets its default intensity "
    "normalisation at the weights' spacing (e.g. CT weights on MR)."
)
DEVICE_HELP = "Where to run."
WEIGHTS_OPTION = typer.Option(..., "--weights", "-w", metavar="WEIGHTS", help=WEIGHTS_HELP)
MODALITY_OPTION = typer.Option(None, "--modality", help=MODALITY_HELP)
DEVICE_OPTION = typer.Option("auto", "--device", help=DEVICE_HELP)
EMBEDDINGS_HELP = "Where scans are embedded (reused when up to date). Default: $VOXSSL_HOME/embeddings/<first 16 hex digits of the weights' sha256>/."


def _stride(value: str) -> int | str:
    return value if value == "auto" else int(value)


def embed(
    images: list[Path] = typer.Argument(
        ..., metavar="IMAGE", help="NIfTI files or DICOM series folders.", show_default=False
    ),
    weights: str = WEIGHTS_OPTION,
    out: Path = typer.Option(
        ..., "--out", "-o", metavar="DIR", help="Folder for one <name>/ folder per scan."
    ),
    stride: Stride = typer.Option(
        "1",
        "--stride",
        help="One embedding per stride^3 block of the preprocessed grid (1, 2, 4, 8), or 'auto': "
        "the smallest stride that keeps the grid at or below 1 M voxels.",
    ),
    modality: Modality | None = MODALITY_OPTION,
    device: Device = DEVICE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Whole-volume voxel embeddings (float16, memory-mapped) with the geometry back to each scan.

    Re-running skips the scans already embedded with the same weights and settings.
    """
    from voxssl.embedding.embed import embed_files, load_embedder

    chosen = _stride(stride)
    embedder = load_embedder(weights, device=device, modality=modality)
    for folder in embed_files(embedder, images, out, stride=chosen, progress=not quiet):
        typer.echo(str(folder))


def explore(
    images: list[Path] = typer.Argument(
        ...,
        metavar="SCAN",
        show_default=False,
        help="One or two scans (NIfTI files or DICOM folders), or embedding folders written by "
        "`voxssl embed` (used as they are).",
    ),
    weights: str | None = typer.Option(
        None,
        "--weights",
        "-w",
        metavar="WEIGHTS",
        help=WEIGHTS_HELP + " Not needed for embedding folders.",
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", metavar="DIR", help=EMBEDDINGS_HELP
    ),
    stride: Stride = typer.Option(
        "auto", "--stride", help="Embedding stride for scans (auto: <= 1 M voxels)."
    ),
    pca: int = typer.Option(
        32,
        "--pca",
        help="Compare embeddings in this many PCA dimensions (0: the full embedding).",
    ),
    display: Literal["scan", "model"] = typer.Option(
        "scan",
        "--display",
        help="scan: show each scan as it is; model: as the model sees it (cropped, at the weights' "
        "spacing: far fewer voxels for the browser to draw, e.g. without a GPU).",
    ),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1 (0: any free port)."),
    modality: Modality | None = MODALITY_OPTION,
    device: Device = DEVICE_OPTION,
    open_browser: bool = flag("--open", help="Open the page in the default browser."),
) -> None:
    """A local web page to look at the voxel embedding: click a voxel, see its similarity map over
    the scan (and the best-matching voxel of a second scan)."""
    from voxssl.explore.launch import serve_forever

    serve_forever(
        images,
        weights=weights,
        embeddings=embeddings,
        stride=_stride(stride),
        components=pca or None,
        display=display,
        port=port,
        modality=modality,
        device=device,
        open_browser=open_browser,
        echo=typer.echo,
    )


def one_shot(
    queries: list[Path] = typer.Argument(
        ...,
        metavar="SCAN",
        show_default=False,
        help="Scans to segment (NIfTI files or DICOM folders).",
    ),
    weights: str = WEIGHTS_OPTION,
    support: tuple[Path, Path] = typer.Option(
        ...,
        "--support",
        metavar="IMAGE LABEL",
        help="The one labelled scan: IMAGE LABEL (label ids 1..255, kept as they are).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", metavar="DIR", help="Output folder for <name>_seg.nii.gz label maps."
    ),
    classes: str | None = typer.Option(
        None,
        "--classes",
        metavar="IDS",
        help="Label ids to segment, e.g. 1,2,3,6 (default: every id of the support label).",
    ),
    method: Literal["prototype", "neighbours", "both"] = typer.Option(
        "both", "--method", help="Organ prototypes, nearest neighbours, or both (their mean)."
    ),
    cca: Literal["3d", "none"] = typer.Option(
        "3d", "--cca", help="3d: keep each organ's most confident connected component."
    ),
    temperature: float = typer.Option(
        0.05, "--temperature", help="Softmax temperature on cosines."
    ),
    neighbours: int = typer.Option(
        10, "--neighbours", help="Support voxels voting per query voxel."
    ),
    neighbour_step: int = typer.Option(
        2,
        "--neighbour-step",
        help="Vote on every n-th voxel per axis and interpolate in between (1: every voxel, 8x "
        "the votes).",
    ),
    stride: Stride = typer.Option(
        "auto", "--stride", help="Embedding stride (auto: <= 1 M voxels per scan)."
    ),
    embeddings: Path | None = typer.Option(
        None, "--embeddings", metavar="DIR", help=EMBEDDINGS_HELP
    ),
    modality: Modality | None = MODALITY_OPTION,
    query_modality: Modality | None = typer.Option(
        None,
        "--query-modality",
        help="Modality of the queries when it differs from the support's (CT -> MR).",
    ),
    device: Device = DEVICE_OPTION,
    quiet: bool = QUIET_OPTION,
) -> None:
    """Segment scans from ONE labelled scan by matching voxel embeddings (no training); label maps
    in each scan's own grid and affine."""
    ids = None
    if classes is not None:
        try:
            ids = [int(c) for c in classes.replace(" ", "").split(",") if c]
        except ValueError:
            raise typer.BadParameter(
                f"label ids like 1,2,3 expected, got {classes!r}", param_hint="--classes"
            ) from None

    from voxssl.embedding.oneshot import OneShotConfig, one_shot_files

    cfg = OneShotConfig(
        method=method,
        cca=cca,
        temperature=temperature,
        neighbours=neighbours,
        neighbour_step=neighbour_step,
    )
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
    command(
        app,
        "embed",
        embed,
        [
            "voxssl embed scan.nii.gz --weights hierarchical-ct --out embeddings/",
            "voxssl embed dicom/series1/ -w runs/demo/backbone.safetensors -o emb/ --stride 2",
        ],
    )
    command(
        app,
        "explore",
        explore,
        [
            "voxssl explore scan.nii.gz --weights runs/demo/backbone.safetensors --open",
            "voxssl explore scan_a.nii.gz scan_b.nii.gz -w hierarchical-ct --port 0",
        ],
    )
    command(
        app,
        "one-shot",
        one_shot,
        [
            "voxssl one-shot new.nii.gz --support ct1.nii.gz ct1_seg.nii.gz -w hierarchical-ct -o seg/",
            "voxssl one-shot mr1.nii.gz --support ct1.nii.gz ct1_seg.nii.gz -w hierarchical-ct "
            "-o seg/ --query-modality mr --classes 1,2,3,6",
        ],
    )
