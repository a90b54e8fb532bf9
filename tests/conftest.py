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
def _restore_locale():
    """SimpleITK's DICOM writer (GDCM) switches the process locale to "C", which makes Python's
    default text encoding ASCII for every later test in the process (torch.compile then fails to
    read its own sources): each test gets the locale back."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    yield
    if locale.setlocale(locale.LC_ALL) != saved:
        locale.setlocale(locale.LC_ALL, saved)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test runs torch on one intra-op thread (restored afterwards): the tests use tiny
    tensors, and on a shared 2-core machine one thread is several times faster than two threads
    competing with the other processes. Multi-process tests set their own workers' threads."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _voxssl_home(tmp_path_factory, monkeypatch):
    """Never touch the user's weights cache from tests."""
    monkeypatch.setenv("VOXSSL_HOME", str(tmp_path_factory.mktemp("voxssl_home")))


@pytest.fixture(scope="session")
def benchmark_script():
    """Import a script of benchmarks/ by name (``benchmark_script("phantom_probe")``): they are not a package."""

    def load(name: str) -> ModuleType:
        folder = str(REPO_ROOT / "benchmarks")
        if folder not in sys.path:  # as when a script runs: its sibling modules import
            sys.path.insert(0, folder)
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses of the script look their module up there
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def phantom_slice_cache(tmp_path_factory) -> dict:
    """A labelled cache of 6 small CT phantoms through the real pipeline (folder adapter ->
    preprocess), for the 2D tests (DINOv2 pretraining, slice classification):
    ``{"cache_dir", "root", "data"}`` where ``data`` is the recipe's ``data`` + ``preprocess`` part."""
    import nibabel as nib
    import numpy as np

    from voxssl.config.recipe import recipe_from_dict
    from voxssl.data.phantoms.generate import generate_phantom
    from voxssl.data.pipeline import run_preprocess

    base = tmp_path_factory.mktemp("phantom_slices")
    root = base / "phantoms"
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True)
    for seed in range(6):
        phantom = generate_phantom(seed, "ct", shape=(64, 52, 24))
        name = f"p{seed:02d}.nii.gz"
        nib.save(
            nib.Nifti1Image(phantom.image.astype(np.int16), phantom.affine), root / "images" / name
        )
        nib.save(nib.Nifti1Image(phantom.label, phantom.affine), root / "labels" / name)
    data = {
        "data": {
            "cache_dir": str(base / "cache"),
            "num_workers": 1,
            "sources": [
                {
                    "adapter": "folder",
                    "name": "phantoms",
                    "root": str(root),
                    "modality": "ct",
                    "options": {"images": "images", "labels": "labels"},
                }
            ],
        },
        "preprocess": {"ct": {"spacing": [6.25, 6.25, 10.0], "window_hu": [-200.0, 300.0]}},
    }
    summary = run_preprocess(recipe_from_dict(data, source="<phantom slices>"), progress=False)
    assert summary.ok, summary.describe()
    return {"cache_dir": base / "cache", "root": root, "data": data}


@pytest.fixture(scope="session")
def images2d() -> ModuleType:
    """tests/images2d.py: small 2D images on disk in every supported format (PNG, JPEG, DICOM)."""
    spec = importlib.util.spec_from_file_location("images2d", REPO_ROOT / "tests" / "images2d.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_dinov2_folder(tmp_path_factory) -> Path:
    """A randomly initialised DINOv2 ViT (32 wide, 2 blocks, 8 px patches, 32 px position grid)
    saved as a Hugging Face folder, the layout of a downloaded hub model."""
    import torch
    from transformers import Dinov2Model

    from voxssl.fewshot.dinov2 import dinov2_config

    torch.manual_seed(0)
    config = dinov2_config(
        "small",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        patch_size=8,
        image_size=32,
    )
    folder = tmp_path_factory.mktemp("tiny_dinov2")
    Dinov2Model(config).save_pretrained(str(folder))
    return folder


@pytest.fixture
def torchrun():
    """``torchrun(script, *args)``: run ``script`` on 2 CPU ranks under real torchrun (gloo), one
    torch thread each; returns the CompletedProcess."""
    import socket
    import subprocess
    import sys

    def run(script: Path, *args, timeout: float = 300):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), *map(str, args),
        ]  # fmt: skip
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)

    return run
