"""scripts/install.sh fails loudly: a failed pip step prints pip's full output and stops with a
non-zero exit (no ``|| true``, no grep that hides a failure); on success it is quiet. Run against a
stand-in ``.venv/bin/python`` that plays pip, so no network is needed (the real install is checked
on a fresh clone, see the README's set-up commands)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

FAKE_PYTHON = """#!/usr/bin/env bash
# a stand-in interpreter: records each call, plays pip and the import checks
echo "$*" >> "$(dirname "$0")/calls.log"
case "$*" in
  "-m pip install --upgrade pip") exit 0 ;;
  "-c import torch") exit 0 ;;
  "-c import importlib.metadata as m; print(m.version('torch'))") echo "2.13.0+cpu"; exit 0 ;;
  "-m pip install -c "*" -e .[fewshot,test]")
    echo "Collecting monai"
    if [ -n "${FAIL_INSTALL:-}" ]; then
      echo "ERROR: Could not find a version that satisfies the requirement monai>=99" >&2
      exit 1
    fi
    exit 0 ;;
  "- 2.13.0+cpu")
    cat > /dev/null
    if [ -n "${FAIL_CHECK:-}" ]; then echo "torch changed from 2.13.0+cpu to 2.5.0" >&2; exit 1; fi
    echo "voxssl 0.1.0 ready (torch 2.13.0+cpu)"; exit 0 ;;
esac
echo "unexpected call: $*" >&2
exit 3
"""


@pytest.fixture
def checkout(tmp_path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO_ROOT / "scripts" / "install.sh", tmp_path / "scripts" / "install.sh")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON, encoding="utf-8")
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    # a chromium on the PATH, so that the script's optional apt-get step never runs in a test
    stub = tmp_path / "bin" / "chromium"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def _install(checkout: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(checkout / "scripts" / "install.sh")],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{checkout / 'bin'}{os.pathsep}{os.environ['PATH']}", **env},
        timeout=60,
    )


def test_a_failed_pip_install_stops_the_script_with_pips_output(checkout):
    done = _install(checkout, FAIL_INSTALL="1")
    assert done.returncode != 0
    assert "Could not find a version that satisfies the requirement monai>=99" in done.stderr
    assert "installing voxssl failed" in done.stderr
    assert "ready" not in done.stdout  # the script stopped there


def test_a_broken_environment_after_the_install_is_an_error(checkout):
    done = _install(checkout, FAIL_CHECK="1")
    assert done.returncode != 0 and "torch changed" in done.stderr


def test_success_is_quiet_and_pins_the_installed_torch(checkout):
    done = _install(checkout)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no warning leaks (torch's version is read without importing it)
    assert "Collecting" not in done.stdout  # pip's chatter only shows when a step fails
    assert done.stdout.strip().endswith("voxssl 0.1.0 ready (torch 2.13.0+cpu)")
    calls = (checkout / ".venv" / "bin" / "calls.log").read_text(encoding="utf-8")
    assert "pip install torch" not in calls  # an importable torch is kept


def test_no_failure_is_hidden_in_the_script():
    text = (REPO_ROOT / "scripts" / "install.sh").read_text(encoding="utf-8")
    assert "|| true" not in text and "| grep" not in text
    assert "set -euo pipefail" in text
