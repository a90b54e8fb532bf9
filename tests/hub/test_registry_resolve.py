"""Registry validation, ``resolve_weights`` for every kind of --weights, and the CLI."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from voxssl.cli import app
from voxssl.hub.errors import (
    ConversionError,
    ManualDownloadRequired,
    NetworkUnavailableError,
    RegistryError,
)
from voxssl.hub.registry import load_registry
from voxssl.hub.resolve import resolve_weights
from voxssl.models.weights import load_backbone, read_plan

from .foreign import foreign_fpn_state
from .http_server import Served, closed_port

ENTRY = """\
version: 1
models:
  - name: tiny-vox2vec
    description: a tiny vox2vec-layout model served by the test server
    format: vox2vec
    modality: ct
    filename: tiny.pt
    urls: [{urls}]
    sha256: {sha256}
    architecture: {{preset: vox2vec, in_channels: 1}}
    preprocessing: {{spacing: [1.0, 1.0, 2.0], window_hu: [-1000.0, 1000.0]}}
    license: MIT
    citation: test
    card: card.md
"""


def write_registry(folder: Path, urls: list[str], sha256: str | None, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "card.md").write_text("# tiny\n", encoding="utf-8")
    text = ENTRY.format(urls=", ".join(urls), sha256=sha256 or "null") + textwrap.indent(extra, "")
    (folder / "registry.yaml").write_text(text, encoding="utf-8")
    return folder / "registry.yaml"


@pytest.fixture(scope="module")
def tiny_pt(tmp_path_factory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.save(foreign_fpn_state(base=4, levels=3, blocks=2, seed=5), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_builtin_registry_is_valid():
    registry = load_registry(include_user=False)
    assert {"vox2vec-contrastive", "hierarchical-ct", "hierarchical-mr"} <= set(registry.names())
    vox2vec = registry.get("vox2vec-contrastive")
    assert vox2vec.urls[0].endswith(
        "/resolve/29dfa9718434a58b3241af3c43dca90c867bea15/vox2vec_contrastive.pt"
    )
    assert len(vox2vec.urls) == 2 and vox2vec.revision_verified is False
    for entry in registry.models:
        assert entry.sha256 is None or len(entry.sha256) == 64  # never a guessed value
        assert registry.card_path(entry).is_file() and entry.license and entry.citation
    assert registry.get("hierarchical-mr").preprocessing["spacing"] == [1.5, 1.5, 1.5]


@pytest.mark.parametrize(
    "change, message",
    [
        ("    colour: red\n", "unknown key 'models.0.colour'"),
        ("    size: -3\n", "size must be a positive number"),
        ("    size: lots\n", "'models.0.size' must be an integer"),
    ],
)
def test_registry_validation_names_the_field(tmp_path, change, message):
    path = write_registry(tmp_path, ["https://example.org/tiny.pt"], None, extra=change)
    with pytest.raises(RegistryError, match=message):
        load_registry(path)


def test_registry_rejects_bad_values(tmp_path):
    path = write_registry(tmp_path, ["https://example.org/tiny.pt"], "abc")
    with pytest.raises(RegistryError, match="sha256 must be 64 hex digits"):
        load_registry(path)
    path = write_registry(tmp_path, ["https://example.org/tiny.pt"], None)
    path.write_text(path.read_text(encoding="utf-8").replace("window_hu", "window"))
    with pytest.raises(RegistryError, match=r"unknown key 'preprocessing \(ct\)\.window'"):
        load_registry(path)
    path.write_text(
        path.read_text(encoding="utf-8")
        .replace("window:", "window_hu:")
        .replace("preset: vox2vec", "preset: unet")
    )
    with pytest.raises(RegistryError, match="preset"):
        load_registry(path)
    (tmp_path / "card.md").unlink()
    with pytest.raises(RegistryError, match="model card not found"):
        load_registry(path)
    with pytest.raises(RegistryError, match="did you mean 'vox2vec-contrastive'"):
        load_registry(include_user=False).get("vox2vec-contrastiv")


def test_registry_name_downloads_converts_and_works_offline(http_server, tmp_path, tiny_pt):
    source, sha = tiny_pt
    http_server.files["/tiny.pt"] = Served(source.read_bytes())
    registry = load_registry(write_registry(tmp_path / "reg", [http_server.url("/tiny.pt")], sha))
    weights = resolve_weights("tiny-vox2vec", registry=registry, progress=False)
    _backbone, plan = load_backbone(weights, expect={"preprocessing.modality": "ct"})
    assert plan.preprocessing["intensity"]["window_hu"] == [-1000.0, 1000.0]
    assert plan.extra["registry_name"] == "tiny-vox2vec" and plan.extra["source_sha256"] == sha
    # offline: the server is gone, the cached (verified) file and its conversion are used
    offline = load_registry(
        write_registry(tmp_path / "off", [f"http://127.0.0.1:{closed_port()}/tiny.pt"], sha)
    )
    assert resolve_weights("tiny-vox2vec", registry=offline, progress=False) == weights
    assert len(http_server.requests) == 1


def test_registry_without_cache_and_network_fails_clearly(tmp_path, tiny_pt):
    registry = load_registry(
        write_registry(tmp_path, [f"http://127.0.0.1:{closed_port()}/tiny.pt"], tiny_pt[1])
    )
    with pytest.raises(NetworkUnavailableError, match="weights download tiny-vox2vec --file PATH"):
        resolve_weights("tiny-vox2vec", registry=registry, progress=False)


def test_manual_entry_asks_for_the_file_and_accepts_it(tmp_path, tiny_pt):
    from voxssl.hub.resolve import registry_weights

    registry = load_registry(include_user=False)
    entry = registry.get("hierarchical-ct")
    with pytest.raises(ManualDownloadRequired, match=r"drive\.google\.com/drive/folders/106mM3"):
        resolve_weights("hierarchical-ct", registry=registry)
    checkpoint = tmp_path / "from_drive.ckpt"
    torch.save({"state_dict": foreign_fpn_state(base=4, levels=3, blocks=2, seed=6)}, checkpoint)
    entry.architecture = {**entry.architecture, "base_channels": 32}  # the published width
    with pytest.raises(
        ConversionError,
        match=r"architecture\.base_channels is 32 but the checkpoint's tensors say 4",
    ):
        registry_weights(entry, local_file=checkpoint, progress=False)
    entry.architecture = {
        "preset": "hierarchical",
        "projection": "none",
        "reconstruction": "none",
    }  # tiny model
    weights = registry_weights(entry, local_file=checkpoint, progress=False)
    plan = read_plan(weights)
    assert plan.preprocessing["modality"] == "ct" and plan.preprocessing["intensity"][
        "window_hu"
    ] == [-175.0, 250.0]


def test_local_files_and_folders(tmp_path, tiny_pt):
    source, _ = tiny_pt
    converted = resolve_weights(source)  # a foreign file: detected, converted once into the cache
    assert read_plan(converted).extra["converted_from"] == "vox2vec"
    assert resolve_weights(source) == converted
    assert resolve_weights(converted) == converted  # a voxssl .safetensors file
    release = tmp_path / "release"
    release.mkdir()
    (release / "model.safetensors").write_bytes(converted.read_bytes())
    assert resolve_weights(release) == release / "model.safetensors"
    run = tmp_path / "run"
    for step in (100, 200):  # a pretraining run folder (layout of voxssl.train.checkpoint)
        folder = run / "checkpoints" / f"step_{step:07d}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(converted.read_bytes())
        torch.save({"step": step}, folder / "state.pt")
    assert resolve_weights(run) == run / "checkpoints" / "step_0000200" / "model.safetensors"
    with pytest.raises(RegistryError, match="not a file, a folder or a registry name"):
        resolve_weights("no-such-model")
    with pytest.raises(ConversionError, match="weights not found"):
        resolve_weights(str(tmp_path / "missing.safetensors"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="not a weights folder"):
        resolve_weights(tmp_path / "empty")


def test_resolve_adapts_input_channels_on_request(tiny_pt):
    source, _ = tiny_pt
    with pytest.raises(ConversionError, match="--adapt-channels repeat"):
        resolve_weights(source, in_channels=4)
    adapted = resolve_weights(source, in_channels=4, adapt_channels="repeat")
    _backbone, plan = load_backbone(adapted, expect={"architecture.in_channels": 4})
    assert plan.extra["adapted_channels"] == "1->4 (repeat)"


def test_cli(http_server, tmp_path, tiny_pt, monkeypatch):
    source, sha = tiny_pt
    http_server.files["/tiny.pt"] = Served(source.read_bytes())
    monkeypatch.setenv(
        "VOXSSL_REGISTRY",
        str(write_registry(tmp_path / "reg", [http_server.url("/tiny.pt")], None)),
    )
    runner = CliRunner()
    listing = runner.invoke(app, ["weights", "list"])
    assert (
        listing.exit_code == 0
        and "tiny-vox2vec" in listing.output
        and "vox2vec-contrastive" in listing.output
    )
    assert (
        runner.invoke(app, ["weights", "path", "tiny-vox2vec"]).exit_code != 0
    )  # not downloaded yet
    downloaded = runner.invoke(app, ["weights", "download", "tiny-vox2vec", "-q"])
    assert downloaded.exit_code == 0, downloaded.output
    assert (
        f"sha256 {sha} (computed" in downloaded.output
    )  # the registry has none: printed for the user
    weights_path = runner.invoke(app, ["weights", "path", "tiny-vox2vec"]).output.strip()
    assert Path(weights_path).is_file()
    info = runner.invoke(app, ["weights", "info", "tiny-vox2vec"])
    assert f"sha256 {sha} (computed)" in info.output
    out = tmp_path / "imported.safetensors"
    imported = runner.invoke(
        app,
        [
            "weights",
            "import",
            str(source),
            "--format",
            "vox2vec",
            "--out",
            str(out),
            "--in-channels",
            "2",
            "--adapt-channels",
            "repeat",
        ],
    )
    assert imported.exit_code == 0, imported.output
    assert read_plan(out).architecture["in_channels"] == 2
    release = tmp_path / "rel"
    exported = runner.invoke(
        app, ["weights", "export", str(out), "--out", str(release), "--license", "MIT"]
    )
    assert exported.exit_code == 0, exported.output
    assert (release / "plan.json").is_file()
    checked = runner.invoke(
        app, ["weights", "import", str(release / "model.safetensors"), "--format", "voxssl"]
    )
    assert checked.exit_code == 0, checked.output
