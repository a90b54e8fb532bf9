"""Export weights as a self-describing release folder::

    <out>/
      model.safetensors     the weights, with the plan in the safetensors header
      plan.json             the same plan, readable without voxssl (architecture, preprocessing...)
      README.md             model card generated from the plan, with the file's sha256
      registry-entry.yaml   a ready-to-paste pretrained/registry.yaml entry (fill in the URL)

``--weights <out>`` and ``voxssl weights import <out>/model.safetensors --format voxssl`` accept it.
Pretraining checkpoints are reduced to their backbone (the projector and reconstruction head are
only needed to continue pretraining, which uses the checkpoint folder); segmentation weights keep
their head, so that ``voxssl predict`` and the MONAI bundle can use them. DINOv2 ViTs
(``voxssl dinov2 pretrain``, :mod:`voxssl.models.vit`) are released the same way (a training
checkpoint reduced to its EMA teacher), without a registry entry: the registry lists 3D backbones.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from voxssl.hub.errors import ConversionError
from voxssl.hub.resolve import resolve_weights
from voxssl.hub.weights_cache import sha256_of
from voxssl.models.vit import backbone_state, load_vit
from voxssl.models.weights import (
    load_backbone,
    load_weights,
    read_plan,
    save_weights,
    strip_prefixes,
)
from voxssl.utils.atomic import atomic_directory

RELEASE_WEIGHTS = "model.safetensors"
RELEASE_PLAN = "plan.json"
RELEASE_CARD = "README.md"
RELEASE_REGISTRY_ENTRY = "registry-entry.yaml"


def export_release(
    weights: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str = "",
    license: str = "unspecified",
    citation: str = "",
    overwrite: bool = False,
) -> Path:
    """Write a release folder for ``weights`` (anything :func:`resolve_weights` accepts).

    The folder is assembled under a temporary name beside ``out`` and renamed into place, so an
    interrupted export never leaves a half-written release. Returns ``out``.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} already exists; choose another --out or pass --overwrite")
    source = resolve_weights(weights)
    plan = read_plan(source)
    name = name or out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    vit = plan.architecture.get("family") == "dinov2"  # voxssl.models.vit
    with atomic_directory(out) as staging:
        target = staging / RELEASE_WEIGHTS
        if plan.kind == "pretrain":
            state, plan = load_weights(source)
            if vit:  # a DINOv2 training checkpoint: its EMA teacher's ViT
                state = backbone_state(state, plan, str(source))
                note = "DINOv2 training checkpoint (EMA teacher)"
            else:
                state = strip_prefixes(state)
                note = "pretraining checkpoint (backbone only)"
            plan.kind = "backbone"
            plan.extra = {**plan.extra, "exported_from": note}
            save_weights(target, state, plan)
        else:
            shutil.copyfile(source, target)
        # the release must load the way users will load it
        (load_vit if vit else load_backbone)(target)
        plan = read_plan(target)
        digest, size = sha256_of(target), target.stat().st_size
        plan_data = json.loads(plan.to_json())
        (staging / RELEASE_PLAN).write_text(
            json.dumps(plan_data, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        (staging / RELEASE_CARD).write_text(
            model_card(name, plan_data, digest, size, description, license, citation),
            encoding="utf-8",
        )
        if not vit:  # the registry lists 3D backbones only
            entry = registry_entry(name, plan_data, digest, size, description, license, citation)
            (staging / RELEASE_REGISTRY_ENTRY).write_text(
                yaml.safe_dump([entry], sort_keys=False, width=100), encoding="utf-8"
            )
    return out


def registry_entry(
    name: str,
    plan: dict[str, Any],
    sha256: str,
    size: int,
    description: str,
    license: str,
    citation: str,
) -> dict[str, Any]:
    """A ``pretrained/registry.yaml`` entry for a release (the URL is left for the publisher)."""
    preprocessing = plan.get("preprocessing", {})
    modality = preprocessing.get("modality", "ct")
    params = {"spacing": preprocessing.get("spacing"), **preprocessing.get("intensity", {})}
    return {
        "name": name,
        "description": description
        or f"voxssl {plan.get('architecture', {}).get('preset', '')} backbone",
        "format": "voxssl",
        "modality": modality,
        "filename": f"{name}.safetensors",
        "urls": ["https://REPLACE-WITH-THE-PUBLIC-URL/model.safetensors"],
        "sha256": sha256,
        "size": size,
        "architecture": plan.get("architecture", {}),
        "preprocessing": {k: v for k, v in params.items() if v is not None},
        "license": license,
        "citation": citation or "REPLACE: how to cite these weights",
        "card": f"cards/{name}.md",
    }


def model_card(
    name: str,
    plan: dict[str, Any],
    sha256: str,
    size: int,
    description: str,
    license: str,
    citation: str,
) -> str:
    """A Markdown model card written from the plan (everything in it is read off the weights)."""
    architecture = plan.get("architecture", {})
    preprocessing = plan.get("preprocessing", {})
    extra = plan.get("extra", {})
    segmentation = extra.get("segmentation")
    rows = "\n".join(
        f"| `{key}` | `{json.dumps(value)}` |" for key, value in sorted(architecture.items())
    )
    prep = {k: v for k, v in preprocessing.items() if k != "intensity"}
    prep.update(preprocessing.get("intensity", {}))
    prep_rows = (
        "\n".join(f"| `{key}` | `{json.dumps(value)}` |" for key, value in sorted(prep.items()))
        or "| (not recorded) | |"
    )
    provenance = (
        "\n".join(
            f"- {key}: {json.dumps(value)}"
            for key, value in sorted(extra.items())
            if key != "segmentation"
        )
        or "- (none recorded)"
    )
    head = (
        f"\n## Segmentation head\n\nClasses (canonical voxssl ids, output order): {segmentation.get('classes')}; "
        f"head `{segmentation.get('head_kind')}`, loss `{segmentation.get('loss')}`, threshold "
        f"{segmentation.get('threshold')}, sliding window {segmentation.get('sw_roi_size', segmentation.get('patch_size'))}.\n"
        if isinstance(segmentation, dict)
        else ""
    )
    use = (
        f"""```
voxssl classify train recipe.yaml --weights path/to/{name}     # this folder
voxssl weights info path/to/{name}/{RELEASE_WEIGHTS}
```

As the few-shot encoder: `fewshot.encoder.weights: path/to/{name}` (type dinov2). In Python:
`voxssl.models.vit.load_vit("path/to/{name}/{RELEASE_WEIGHTS}")` returns the
`transformers.Dinov2Model`."""
        if architecture.get("family") == "dinov2"
        else f"""```
voxssl linear-probe recipe.yaml --weights path/to/{name}      # this folder
voxssl weights info path/to/{name}/{RELEASE_WEIGHTS}
```

In Python: `voxssl.models.weights.load_backbone("path/to/{name}/{RELEASE_WEIGHTS}")`."""
    )
    return f"""# {name}

{description or "Weights exported by voxssl."}

| | |
|---|---|
| File | `{RELEASE_WEIGHTS}` ({size} bytes) |
| sha256 | `{sha256}` |
| Kind | {plan.get("kind")} |
| voxssl version | {plan.get("voxssl_version")} |
| Licence | {license} |

## Use

{use}

## Architecture (`model` recipe section)

| field | value |
|---|---|
{rows}

## Preprocessing the weights expect

| field | value |
|---|---|
{prep_rows}
{head}
## Provenance

{provenance}

## Citation

{citation or "Not given."}
"""


__all__ = [
    "RELEASE_CARD",
    "RELEASE_PLAN",
    "RELEASE_WEIGHTS",
    "export_release",
    "model_card",
    "registry_entry",
]
