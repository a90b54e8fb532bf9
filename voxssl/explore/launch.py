"""Start ``voxssl explore``: embed what needs embedding, build the index, serve until Ctrl-C."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from voxssl.embedding.embed import ensure_embeddings, load_embedder
from voxssl.embedding.store import (
    META_FILE,
    StoredEmbedding,
    default_embeddings_dir,
    embedding_name,
)
from voxssl.errors import ConfigError, DataError
from voxssl.explore.server import DISPLAYS, Explorer, ExploreServer

log = logging.getLogger(__name__)

MAX_SCANS = 2


def open_scans(
    inputs: Sequence[str | os.PathLike],
    weights: str | None,
    embeddings: str | os.PathLike | None = None,
    stride: int | str = "auto",
    modality: str | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[StoredEmbedding]:
    """Stored embeddings for the inputs: embedding folders as they are, scans embedded (or reused)."""
    paths = [Path(p) for p in inputs]
    if not paths or len(paths) > MAX_SCANS:
        raise ConfigError(f"explore takes one or two scans, got {len(paths)}")
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise DataError(f"explore: input not found: {missing[0]}")
    is_stored = [(p / META_FILE).is_file() for p in paths]
    to_embed = [p for p, stored in zip(paths, is_stored, strict=True) if not stored]
    embedded: dict[Path, StoredEmbedding] = {}
    names = [embedding_name(p) for p in to_embed]
    if len(set(names)) < len(names):
        raise DataError(
            f"explore: {' and '.join(map(str, to_embed))} would both be embedded as '{names[0]}'; "
            "embed one with `voxssl embed` into another folder and give that folder instead"
        )
    if to_embed:
        if weights is None:
            raise ConfigError(
                f"explore: {to_embed[0]} is a scan, not an embedding folder: give --weights"
            )

        embedder = load_embedder(weights, device=device, modality=modality)
        out = Path(embeddings) if embeddings else default_embeddings_dir(embedder.weights_sha256)
        for path in to_embed:  # every scan at the first one's stride: comparable vectors
            (embedded[path],) = ensure_embeddings(
                embedder, [path], out, stride=stride, progress=progress
            )
            stride = embedded[path].stride
    return [
        StoredEmbedding.open(p) if stored else embedded[p]
        for p, stored in zip(paths, is_stored, strict=True)
    ]


def serve_forever(
    inputs: Sequence[str | os.PathLike],
    weights: str | None,
    embeddings: str | os.PathLike | None = None,
    stride: int | str = "auto",
    components: int | None = 32,
    display: str = "scan",
    port: int = 8765,
    modality: str | None = None,
    device: str = "auto",
    open_browser: bool = False,
    echo: Callable[[str], None] = print,
) -> None:

    if display not in DISPLAYS:
        raise ConfigError(f"--display must be one of {', '.join(DISPLAYS)}, got {display!r}")
    scans = open_scans(inputs, weights, embeddings, stride, modality, device)
    explorer = Explorer(scans, components=components, display=display)
    try:
        server = ExploreServer(explorer, port=port)
    except OSError as err:
        raise ConfigError(
            f"explore: cannot listen on 127.0.0.1:{port} ({err}); try --port 0"
        ) from None
    with server:
        echo(f"voxssl explore: open {server.url} (Ctrl-C to stop)")
        if open_browser:
            import webbrowser

            webbrowser.open(server.url)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            echo("stopped")


__all__ = ["open_scans", "serve_forever"]
