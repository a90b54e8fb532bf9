"""``voxssl explore``: a local web page to look at a voxel embedding.

A small HTTP server (standard library, bound to 127.0.0.1) serves:

* ``/``: the page (``static/index.html`` + ``static/explore.js``): NiiVue shows each scan in
  three orthogonal views; a click in either scan asks ``/api/click`` for the cosine-similarity
  map of that voxel over every scan, which the page writes into an overlay volume already loaded
  on the embedding grid (no new file to parse per click), and marks the best match in the other
  scan with its crosshair;
* ``/static/niivue/...``: the NiiVue browser bundle vendored from npm (served gzipped as stored);
* ``/api/scan/<i>.nii``: the scan as NIfTI (voxels and affine as read by voxssl, RAS order);
* ``/api/overlay/<i>.nii``: a float32 NIfTI of zeros on scan i's embedding grid, with the
  embedding affine: NiiVue reslices it onto the scan in world coordinates;
* ``/api/click?scan=i&x=..&y=..&z=..`` (world RAS mm): ``uint32`` header length, a JSON header
  (query voxel, best match per scan, timings) and one float32 map per scan (embedding-grid voxels,
  x fastest: NIfTI order).

Nothing is fetched from the network: the page only loads what this server serves.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import struct
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np

from voxssl.data import geometry
from voxssl.data.readers import read_volume
from voxssl.embedding.similarity import SimilarityIndex
from voxssl.embedding.store import StoredEmbedding
from voxssl.errors import ConfigError

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
}


DISPLAYS = ("scan", "model")


def scan_nifti_bytes(source: str | Path, model_grid: dict[str, Any] | None = None) -> bytes:
    """The scan as an uncompressed NIfTI-1 (RAS voxel order, RAS affine as voxssl reads it).

    With ``model_grid`` (an embedding's preprocessing meta) the scan is resampled (linearly, in
    its own units: HU stay HU) onto the grid the model saw: cropped, at the model's spacing.
    """
    import nibabel as nib

    volume = read_volume(source, allow_channels=True)
    data = volume.data if volume.data.ndim == 3 else volume.data[0]  # first channel
    affine = volume.affine
    if model_grid is not None:
        box = np.asarray(model_grid["crop_box"], dtype=np.int64)
        positions = geometry.source_positions(
            box, np.asarray(model_grid["ratio"], dtype=np.float64)
        )
        data = geometry.resample_linear(data, positions)
        affine = np.asarray(model_grid["affine"], dtype=np.float64)
    if data.dtype not in (np.int16, np.uint8, np.float32):
        data = data.astype(np.int16 if np.issubdtype(data.dtype, np.integer) else np.float32)
    image = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return image.to_bytes()


def overlay_nifti_bytes(scan: StoredEmbedding) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(np.zeros(scan.shape, dtype=np.float32), scan.affine)
    image.set_qform(scan.affine, code=1)
    image.set_sform(scan.affine, code=1)
    image.header["cal_min"], image.header["cal_max"] = 0.0, 1.0
    return image.to_bytes()


class Explorer:
    """The state behind the page: the scans, their similarity index, the served volumes."""

    def __init__(
        self, scans: Sequence[StoredEmbedding], components: int | None = 32, display: str = "scan"
    ) -> None:
        if display not in DISPLAYS:
            raise ConfigError(f"--display must be one of {', '.join(DISPLAYS)}, got {display!r}")
        self.display = display
        self.scans = list(scans)
        started = time.perf_counter()
        self.index = SimilarityIndex(self.scans, components=components)
        self.index_seconds = time.perf_counter() - started
        self._volumes: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {
            "scans": [
                {
                    "index": i,
                    "name": scan.meta.get("name", scan.folder.name),
                    "source": scan.source,
                    "embedding_shape": list(scan.shape),
                    "stride": scan.stride,
                    "dim": scan.dim,
                }
                for i, scan in enumerate(self.scans)
            ],
            "similarity_dim": self.index.width,
            "pca_energy": self.index.energy,
            "index_seconds": self.index_seconds,
        }

    def scan_volume(self, i: int) -> bytes:
        with self._lock:
            if i not in self._volumes:
                grid = self.scans[i].preprocess_meta if self.display == "model" else None
                self._volumes[i] = scan_nifti_bytes(self.scans[i].source, grid)
            return self._volumes[i]

    def click(
        self, scan_index: int, point_mm: Sequence[float]
    ) -> tuple[dict[str, Any], list[np.ndarray]]:
        """Similarity maps of the voxel at ``point_mm`` of scan ``scan_index`` over every scan."""
        started, cpu_started = time.perf_counter(), time.thread_time()
        scan = self.scans[scan_index]
        voxel = scan.nearest_voxel(point_mm)
        header: dict[str, Any] = {
            "scan": scan_index,
            "point_mm": [float(v) for v in point_mm],
            "inside": voxel is not None,
        }
        if voxel is None:  # outside the embedded (cropped) region
            header["server_ms"] = 1000 * (time.perf_counter() - started)
            return header, []
        query = self.index.vector_at(scan_index, voxel)
        maps, matches, display = [], [], []
        for i in range(len(self.scans)):
            similarity = self.index.similarity(i, query)
            match = self.index.best_match(i, similarity)
            matches.append(
                {
                    "scan": i,
                    "voxel": list(match.voxel),
                    "world_mm": list(match.world),
                    "score": match.score,
                }
            )
            display.append(display_range(similarity, self.index.masks[i]))
            maps.append(similarity)
        header.update(
            voxel=list(voxel),
            voxel_world_mm=[float(v) for v in scan.voxel_to_world(np.array(voxel))[0]],
            matches=matches,
            display=display,
            server_ms=1000 * (time.perf_counter() - started),
            server_cpu_ms=1000 * (time.thread_time() - cpu_started),
        )
        return header, maps


def display_range(similarity: np.ndarray, mask: np.ndarray | None) -> dict[str, float]:
    """Percentiles of a similarity map over the body (on a subsample) for the overlay's range."""
    values = similarity.reshape(-1)
    if mask is not None and mask.any():
        values = values[mask]
    sample = values[:: max(1, values.size // 100_000)]
    p75, p90, p95, p99 = (float(v) for v in np.percentile(sample, [75, 90, 95, 99]))
    return {"p75": p75, "p90": p90, "p95": p95, "p99": p99, "max": float(values.max())}


def click_payload(header: dict[str, Any], maps: Sequence[np.ndarray]) -> bytes:
    """``<uint32 little-endian header length><JSON header><float32 maps, NIfTI (Fortran) order>``."""
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-(len(text) + 4) % 4)  # keep the float32 data 4-byte aligned
    body = io.BytesIO()
    body.write(struct.pack("<I", len(text)))
    body.write(text)
    for similarity in maps:
        body.write(np.asarray(similarity, dtype="<f4").ravel(order="F").tobytes())
    return body.getvalue()


def make_handler(explorer: Explorer):
    class Handler(BaseHTTPRequestHandler):
        server_version = "voxssl-explore"

        def log_message(self, format: str, *args) -> None:
            log.debug("%s - %s", self.address_string(), format % args)

        def _send(
            self, status: int, body: bytes, content_type: str, headers: dict | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(), "application/json")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            url = urlparse(self.path)
            path = url.path
            try:
                if path in ("/", "/index.html"):
                    return self._static("index.html")
                if (
                    path == "/favicon.ico"
                ):  # no icon: an empty answer instead of a 404 in the console
                    return self._send(204, b"", "image/x-icon")
                if path.startswith("/static/"):
                    return self._static(path[len("/static/") :])
                if path == "/api/info":
                    return self._send(200, json.dumps(explorer.info()).encode(), "application/json")
                if path.startswith("/api/scan/") and path.endswith(".nii"):
                    i = self._scan_index(path[len("/api/scan/") : -len(".nii")])
                    return self._send(200, explorer.scan_volume(i), "application/octet-stream")
                if path.startswith("/api/overlay/") and path.endswith(".nii"):
                    i = self._scan_index(path[len("/api/overlay/") : -len(".nii")])
                    body = overlay_nifti_bytes(explorer.scans[i])
                    return self._send(200, body, "application/octet-stream")
                if path == "/api/click":
                    query = parse_qs(url.query)
                    i = self._scan_index(query.get("scan", ["0"])[0])
                    point = [float(query[k][0]) for k in ("x", "y", "z")]
                    header, maps = explorer.click(i, point)
                    return self._send(200, click_payload(header, maps), "application/octet-stream")
            except (KeyError, ValueError, IndexError) as err:
                return self._error(400, f"bad request {self.path}: {err}")
            except BrokenPipeError:
                return None
            return self._error(404, f"not found: {path}")

        def _scan_index(self, text: str) -> int:
            i = int(text)
            if not 0 <= i < len(explorer.scans):
                raise IndexError(f"scan {i} does not exist")
            return i

        def _static(self, relative: str) -> None:
            target = (STATIC / relative).resolve()
            if STATIC.resolve() not in target.parents:
                return self._error(404, f"not found: {relative}")
            gzipped = target.with_name(target.name + ".gz")
            if gzipped.is_file() and not target.is_file():  # stored compressed (the NiiVue bundle)
                data = gzipped.read_bytes()
                content_type = CONTENT_TYPES.get(target.suffix, "application/octet-stream")
                if "gzip" in self.headers.get("Accept-Encoding", ""):
                    return self._send(200, data, content_type, {"Content-Encoding": "gzip"})
                return self._send(200, gzip.decompress(data), content_type)
            if not target.is_file():
                return self._error(404, f"not found: {relative}")
            content_type = CONTENT_TYPES.get(target.suffix, "application/octet-stream")
            return self._send(200, target.read_bytes(), content_type)

    return Handler


class ExploreServer:
    """The HTTP server on 127.0.0.1 (``port`` 0: a free port), serving in a background thread."""

    def __init__(self, explorer: Explorer, port: int = 0, host: str = "127.0.0.1") -> None:
        self.explorer = explorer
        self.httpd = ThreadingHTTPServer((host, port), make_handler(explorer))
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> ExploreServer:
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="voxssl-explore", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def __enter__(self) -> ExploreServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ExploreServer", "Explorer", "click_payload", "overlay_nifti_bytes", "scan_nifti_bytes"]
