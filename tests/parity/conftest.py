"""Parity tests: voxssl against outputs of the authors' reference code (tests/fixtures/parity/,
written by scripts/make_parity_fixtures.py; fixtures.json names the commits)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import parity_common


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def fixture():
    def load(name: str) -> dict:
        with np.load(parity_common.FIXTURES / name) as data:
            return {k: data[k] for k in data.files}

    return load
