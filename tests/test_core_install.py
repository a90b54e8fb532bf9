"""A core install (no ``fewshot`` extra) works: in a fresh interpreter where transformers, peft and
scikit-image cannot be imported, every voxssl module imports, the core verbs run on a phantom, and
the features that need an optional package say what to install in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voxssl.extras import OPTIONAL, MissingDependencyError, require

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name.partition(".")[0])
            return None

    sys.meta_path.insert(0, Block())
    for name in BLOCKED:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit(f"the blocker let {{name}} through")

    import voxssl
    modules = [m.name for m in pkgutil.walk_packages(voxssl.__path__, "voxssl.")]
    for name in modules:
        importlib.import_module(name)

    from voxssl.cli import main
    out = sys.argv[1]
    main(["phantoms", out + "/ph", "--cases", "1", "--seed", "0"])
    from voxssl.extras import MissingDependencyError
    from voxssl.fewshot.superpixels import SuperpixelParams, slice_superpixels
    import numpy as np
    try:
        slice_superpixels(np.zeros((8, 8), np.float32), np.ones((8, 8), bool), SuperpixelParams(100.0, 0.8, 4, 8))
    except MissingDependencyError as err:
        superpixels = str(err)
    from voxssl.fewshot.dinov2 import load_dinov2
    try:
        load_dinov2("small", pretrained=False)
    except MissingDependencyError as err:
        dinov2 = str(err)
    print(json.dumps({{"modules": len(modules), "superpixels": superpixels, "dinov2": dinov2}}))
    """
)


@pytest.mark.multiprocess
def test_core_install_without_the_fewshot_extra(tmp_path):
    script = SCRIPT.format(blocked=sorted(OPTIONAL))
    env = {**os.environ, "PYTHONPATH": str(REPO), "VOXSSL_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["modules"] > 100  # every module of the package was imported
    assert sorted(p.name for p in (tmp_path / "ph" / "images").iterdir())  # a core verb ran
    assert "few-shot superpixels needs scikit-image" in result["superpixels"]
    assert "pip install 'voxssl[fewshot]'" in result["superpixels"]
    assert "the DINOv2 encoder needs transformers" in result["dinov2"]


def test_require_reports_only_the_missing_package_itself(monkeypatch):
    import importlib

    def broken_inside(name):  # transformers is installed but one of ITS dependencies is missing
        raise ModuleNotFoundError("No module named 'tokenizers'", name="tokenizers")

    monkeypatch.setattr(importlib, "import_module", broken_inside)
    with pytest.raises(ModuleNotFoundError, match="tokenizers"):
        require("transformers", "x")

    def absent(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name="peft")

    monkeypatch.setattr(importlib, "import_module", absent)
    with pytest.raises(MissingDependencyError, match=r"^LoRA needs peft>=0\.10, which is not"):
        require("peft", "LoRA")
    with pytest.raises(ValueError, match="not an optional dependency"):
        require("numpy", "x")
