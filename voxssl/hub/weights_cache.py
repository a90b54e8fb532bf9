"""Where downloaded and converted weights live: ``$VOXSSL_HOME`` (default ``~/.cache/voxssl``).

One environment variable moves everything (like TotalSegmentator's ``TOTALSEG_HOME_DIR``)::

    $VOXSSL_HOME/
      weights/<name>/<file>             downloaded files, exactly as published
      weights/<name>/<file>.json        its record: sha256 (from the registry or computed), URL, size
      weights/<name>/<file>.part        a download in progress (resumed with HTTP Range)
      converted/<sha256[:16]>/model.safetensors   foreign checkpoints converted to voxssl's layout
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

HOME_ENV = "VOXSSL_HOME"
DEFAULT_HOME = Path("~/.cache/voxssl")


def voxssl_home() -> Path:
    """The cache root: ``$VOXSSL_HOME`` or ``~/.cache/voxssl``."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def weights_dir(name: str) -> Path:
    """Folder of the downloaded files of registry entry ``name``."""
    return voxssl_home() / "weights" / name


def converted_dir(source_sha256: str) -> Path:
    """Folder of the voxssl conversion of a foreign checkpoint, keyed by the source's sha256."""
    return voxssl_home() / "converted" / source_sha256[:16]


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["HOME_ENV", "converted_dir", "sha256_of", "voxssl_home", "weights_dir"]
