"""A real HTTP server on 127.0.0.1 for download tests (stdlib ``http.server`` in a thread).

Files are served from a dict ``path -> bytes``. Per-path behaviours:

* ``range``: honour ``Range: bytes=N-`` with 206 + Content-Range (default on);
* ``drop_after``: announce the full Content-Length but close the connection after this many
  body bytes, for the first ``drops`` requests of that path;
* ``content_type``: override the Content-Type (e.g. text/html for a login page);
* missing paths answer 404.

Every request is logged in ``server.requests`` as ``(path, range_header, status)``.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    data: bytes
    range: bool = True
    drop_after: int | None = None
    drops: int = 1
    content_type: str = "application/octet-stream"


@dataclass
class FileServer:
    files: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, str | None, int]] = field(default_factory=list)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(state: FileServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            served = state.files.get(self.path)
            range_header = self.headers.get("Range")
            if served is None:
                state.requests.append((self.path, range_header, 404))
                self.send_error(404)
                return
            data, start, status = served.data, 0, 200
            match = re.match(r"bytes=(\d+)-$", range_header or "")
            if served.range and match:
                start = int(match.group(1))
                if start >= len(data):
                    state.requests.append((self.path, range_header, 416))
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            body = data[start:]
            state.requests.append((self.path, range_header, status))
            self.send_response(status)
            self.send_header("Content-Type", served.content_type)
            self.send_header("Content-Length", str(len(body)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            if served.range:
                self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if served.drop_after is not None and served.drops > 0:
                served.drops -= 1
                self.wfile.write(body[: served.drop_after])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


class RunningServer:
    def __init__(self) -> None:
        self.state = FileServer()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.httpd.daemon_threads = True
        self.state.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self.state

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def closed_port() -> int:
    """A local port with nothing listening (bind, read the port, close)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
