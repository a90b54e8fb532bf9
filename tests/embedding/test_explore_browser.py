"""``voxssl explore`` in a real headless browser (Debian's chromium driven by playwright).

The CLI is started as a subprocess on a phantom pair (scan B is scan A moved 30/-20/48 mm in the
scanner and stored LPS instead of RAS, so every voxel of A has a known counterpart in B). The test
clicks the page at phantom landmarks of scan A and checks that the similarity overlay appears and
that the best match marked in scan B lands on the same landmark. Skipped, with the reason, only
where chromium or playwright cannot be had.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import SHIFT_MM

CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in CI containers
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LANDMARKS = ("vertebra_02", "liver_centroid", "left_kidney_centroid")


def chromium_path() -> str:
    """Debian's chromium, or skip with the reason."""
    pytest.importorskip(
        "playwright.sync_api",
        reason="the python package playwright is not installed (pip install playwright)",
    )
    path = os.environ.get("VOXSSL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(
            "Debian's chromium package is not installed (scripts/install.sh installs it with apt-get when run as root)"
        )
    return path


def start_explore(argv: list[str], timeout: float = 240.0) -> tuple[subprocess.Popen, str]:
    """Start ``voxssl explore`` and return (process, the URL it printed)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "voxssl.cli", "explore", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=env,
    )
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "open http://127.0.0.1:" in line:
            return process, line.split("open ", 1)[1].split()[0]
    process.kill()
    raise AssertionError("voxssl explore printed no URL:\n" + "".join(lines))


def warm_pixels(png: bytes, box: dict) -> int:
    """Pixels of the 'warm' overlay colours (red/orange/yellow, not grey) inside ``box``."""
    import io

    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    x0, y0 = int(box["x"]), int(box["y"])
    region = image[y0 : y0 + int(box["height"]), x0 : x0 + int(box["width"])]
    r, g, b = region[..., 0], region[..., 1], region[..., 2]
    return int(((r > 150) & (r - b > 90) & (g > 40)).sum())


@pytest.mark.multiprocess  # drives a chromium process
def test_click_shows_similarity_and_marks_the_match(weights, phantom_pair, tmp_path):
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    scan_a, scan_b, _, landmarks_json = phantom_pair
    landmarks = {
        e["name"]: e["world_mm"] for e in json.loads(landmarks_json.read_text())["landmarks"]
    }
    process, url = start_explore(
        [
            str(scan_a),
            str(scan_b),
            "--weights",
            str(weights),
            "--embeddings",
            str(tmp_path / "emb"),
            "--stride",
            "1",
            "--pca",
            "0",
            "--port",
            "0",
            "--device",
            "cpu",
        ]
    )
    try:
        with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,  # a fresh --user-data-dir
                executable_path=executable,
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1400, "height": 720},
            )
            try:
                page = context.new_page()
                errors = []
                page.on("pageerror", lambda err: errors.append(str(err)))
                page.goto(url)
                page.wait_for_function(
                    "window.voxsslExplore && (window.voxsslExplore.ready || window.voxsslExplore.error)",
                    timeout=120_000,
                )
                assert page.evaluate("window.voxsslExplore.error") is None
                view_a = page.locator("#gl0").bounding_box()
                before = warm_pixels(page.screenshot(), view_a)
                for count, name in enumerate(LANDMARKS, start=1):
                    target = np.asarray(landmarks[name])
                    point = page.evaluate(
                        "([i, mm]) => window.voxsslExplore.pagePointOf(i, mm)", [0, target.tolist()]
                    )
                    assert point is not None, name
                    page.mouse.click(point["x"], point["y"])
                    page.wait_for_function(
                        f"window.voxsslExplore.clicks >= {count}", timeout=60_000
                    )
                    last = page.evaluate("window.voxsslExplore.last")
                    clicked = np.asarray(last["point_mm"])
                    assert np.linalg.norm(clicked - target) < 4.0, (
                        name,
                        clicked,
                        target,
                    )  # one screen pixel ~ 1 mm
                    match = np.asarray(last["matches"][1]["world_mm"])
                    # the same embedding voxel, moved with the scan ...
                    np.testing.assert_allclose(
                        match, np.asarray(last["voxel_world_mm"]) + SHIFT_MM, atol=1e-3
                    )
                    # ... which is the landmark of scan B, up to the 8 x 8 x 12 mm embedding grid
                    assert np.linalg.norm(match - (target + SHIFT_MM)) < 10.0, (name, match)
                    crosshair_b = np.asarray(page.evaluate("window.voxsslExplore.crosshairMM(1)"))
                    np.testing.assert_allclose(crosshair_b, match, atol=0.5)
                    stats = page.evaluate("window.voxsslExplore.overlayStats(1)")
                    assert stats["nonzero"] > 0.9 * stats["voxels"] and stats[
                        "max"
                    ] == pytest.approx(1.0, abs=1e-4)
                shot = page.screenshot()
                assert warm_pixels(shot, view_a) > before + 500  # the overlay is drawn
                assert "best match" in page.locator("#match1").inner_text()
                timings = page.evaluate("window.voxsslExplore.timings")
                assert len(timings) == len(LANDMARKS) and all(t["total_ms"] > 0 for t in timings)
                assert not errors, errors
                if os.environ.get("VOXSSL_SCREENSHOT"):
                    Path(os.environ["VOXSSL_SCREENSHOT"]).write_bytes(shot)
            finally:
                context.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    assert process.returncode is not None
