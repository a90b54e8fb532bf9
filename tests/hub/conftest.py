from __future__ import annotations

import pytest

from .http_server import RunningServer


@pytest.fixture()
def http_server():
    """A live HTTP server on 127.0.0.1; add files with ``server.files['/x'] = Served(b'...')``."""
    with RunningServer() as state:
        yield state
