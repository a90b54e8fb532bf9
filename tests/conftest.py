"""Shared fixtures. Tests that need ../shared/data/real skip (never fail) when it is absent."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("VOXSSL_REAL_DATA", REPO_ROOT.parent / "shared" / "data" / "real"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder of real volumes beside the checkout; skips the test when it is absent."""
    if not (REAL_DATA / "ts_ct.nii.gz").is_file():
        pytest.skip(f"real data not found at {REAL_DATA}")
    return REAL_DATA


@pytest.fixture(autouse=True)
def _voxssl_home(tmp_path_factory, monkeypatch):
    """Never touch the user's weights cache from tests."""
    monkeypatch.setenv("VOXSSL_HOME", str(tmp_path_factory.mktemp("voxssl_home")))


@pytest.fixture(scope="session")
def benchmark_script():
    """Import a script of benchmarks/ by name (``benchmark_script("phantom_probe")``): they are not a package."""

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses of the script look their module up there
        spec.loader.exec_module(module)
        return module

    return load
