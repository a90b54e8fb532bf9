"""Import published checkpoints into voxssl weights (``.safetensors`` + plan).

Two foreign layouts are understood; both name the FPN the way vox2vec's ``FPN3d`` does:

* ``vox2vec`` (github.com/mishgon/vox2vec, file ``vox2vec_contrastive.pt``): a plain state dict;
* ``hierarchical`` (github.com/multimodallearning/hierarchical-dense-ssl): ``{"state_dict": ...}``
  with the backbone's keys only, no ``backbone.`` prefix. Its per-level projections were never
  saved (a plain Python list in the published code), so the import has ``projection: none``.

The foreign key grammar (``c_i = base * 2**i``, ``L`` levels, ``n`` blocks per stage)::

    first_conv.{weight,bias}                                  (c_0, in, 3, 3, 3), (c_0,)
    left_blocks.<i>.layers.<j>.layers.<0|3>.<batchnorm>       (c_i,)         i < L-1, j < n
    left_blocks.<i>.layers.<j>.layers.<2|5>.{weight,bias}     (c_i, c_i, 3, 3, 3), (c_i,)
    down_blocks.<i>.1.{weight,bias}                           (c_{i+1}, c_i, 1, 1, 1)
    bottom_block.layers.<j>.layers.<...>                      level L-1
    up_blocks.<k>.0.{weight,bias}                             (c_i, c_{i+1}, 1, 1, 1), i = L-2-k
    skip_blocks.<k>.{weight,bias}                             (c_i, c_i, 1, 1, 1)
    right_blocks.<k>.layers.<j>.layers.<...>                  level i = L-2-k

Every foreign key is parsed into (part, level, block, layer, tensor) and placed by
:func:`voxssl_key`, which states voxssl's own layout (``voxssl.models.fpn.FPN``); the result is
then checked key by key and shape by shape against a freshly built voxssl backbone, and the first
mismatch is named in a :class:`~voxssl.hub.errors.ConversionError`.

Files are read with ``torch.load(weights_only=True)``: no pickled code ever runs.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from voxssl.config.data import PreprocessConfig
from voxssl.config.loader import from_dict
from voxssl.config.model import ModelConfig, model_config_from_dict, model_config_to_dict
from voxssl.hub.channels import AdaptChannels, adapt_input_channels
from voxssl.hub.errors import ConversionError
from voxssl.hub.weights_cache import sha256_of
from voxssl.models.build import build_backbone
from voxssl.models.plan import Plan, preprocessing_plan
from voxssl.models.weights import load_backbone, remove_leading_prefixes, save_weights

logger = logging.getLogger(__name__)

ForeignFormat = Literal["vox2vec", "hierarchical"]
FOREIGN_FORMATS: tuple[str, ...] = ("vox2vec", "hierarchical")

# Wrapper prefixes stripped before parsing (DDP / DataParallel, torch.compile, Lightning modules).
_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.")
# Keys of pretraining heads that may sit beside the backbone in a training checkpoint.
_HEAD_PREFIXES = ("proj_head.", "rest_head.", "projector.", "head.", "heads.", "scale_proj.")

_BATCHNORM_TENSORS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_STAGE_KEY = re.compile(
    r"^(?P<part>left_blocks|right_blocks)\.(?P<index>\d+)\.layers\.(?P<block>\d+)\.layers\.(?P<layer>\d+)\.(?P<tensor>\w+)$"
)
_BOTTOM_KEY = re.compile(
    r"^bottom_block\.layers\.(?P<block>\d+)\.layers\.(?P<layer>\d+)\.(?P<tensor>\w+)$"
)
_DOWN_KEY = re.compile(r"^down_blocks\.(?P<index>\d+)\.1\.(?P<tensor>weight|bias)$")
_UP_KEY = re.compile(r"^up_blocks\.(?P<index>\d+)\.0\.(?P<tensor>weight|bias)$")
_SKIP_KEY = re.compile(r"^skip_blocks\.(?P<index>\d+)\.(?P<tensor>weight|bias)$")
_FIRST_KEY = re.compile(r"^first_conv\.(?P<tensor>weight|bias)$")

# Position inside a pre-activation residual block: norm, ReLU, conv, norm, ReLU, conv.
_BLOCK_LAYERS = {0: "norm1", 2: "conv1", 3: "norm2", 5: "conv2"}


@dataclass(frozen=True)
class ParsedKey:
    """Where a foreign tensor belongs, independent of anybody's naming.

    ``part``: first_conv | encoder | down | bottom | up | skip | decoder; ``level``: pyramid level
    (0 = full resolution); ``block``/``layer``: residual block index and its layer (norm1, conv1,
    norm2, conv2); ``tensor``: weight, bias, running_mean...
    """

    part: str
    level: int | None
    block: int | None
    layer: str | None
    tensor: str


@dataclass(frozen=True)
class FPNShape:
    """Architecture numbers read off a state dict's tensor shapes."""

    in_channels: int
    base_channels: int
    num_levels: int
    blocks_per_stage: int


# --------------------------------------------------------------------------------------------
# reading


def read_torch_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with an error that tells the user what to do."""
    import pickle

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as err:
        raise ConversionError(
            f"{path}: cannot be read as tensors only ({str(err).splitlines()[0]}). voxssl never unpickles "
            "arbitrary objects (that can run code). If you trust the file, re-save its weights alone in the "
            "environment that made it: torch.save(torch.load(f)['state_dict'], 'weights_only.pt'); "
            "see docs/weights.md"
        ) from None
    except (EOFError, OSError, ValueError) as err:
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({err})") from None


def extract_state_dict(checkpoint: Any, fmt: ForeignFormat, source: str) -> dict[str, torch.Tensor]:
    """The flat tensor mapping of a loaded checkpoint, according to its format."""
    if fmt == "hierarchical":
        if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
            found = (
                ", ".join(list(checkpoint)[:5])
                if isinstance(checkpoint, Mapping)
                else type(checkpoint).__name__
            )
            raise ConversionError(
                f"{source}: a hierarchical-dense-ssl checkpoint is a dict with a 'state_dict' entry; found {found}"
            )
        checkpoint = checkpoint["state_dict"]
    elif (
        isinstance(checkpoint, Mapping)
        and "state_dict" in checkpoint
        and "first_conv.weight" not in checkpoint
    ):
        checkpoint = checkpoint["state_dict"]  # a vox2vec Lightning checkpoint
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(
            f"{source}: expected a mapping of parameter names to tensors, got {type(checkpoint).__name__}"
        )
    bad = next(
        (key for key, value in checkpoint.items() if not isinstance(value, torch.Tensor)), None
    )
    if bad is not None:
        raise ConversionError(
            f"{source}: entry '{bad}' is a {type(checkpoint[bad]).__name__}, not a tensor"
        )
    return dict(checkpoint)


def strip_wrappers(
    state: Mapping[str, torch.Tensor], source: str = "<checkpoint>"
) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` / ``model.`` / ``backbone.`` prefixes and drop head keys."""
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        name = remove_leading_prefixes(key, _PREFIXES)
        if name.startswith(_HEAD_PREFIXES):
            dropped.append(key)
            continue
        if name in out:
            raise ConversionError(
                f"{source}: keys '{key}' and another one both map to '{name}' after removing prefixes"
            )
        out[name] = value
    if dropped:
        logger.info(
            "%s: ignoring %d keys of pretraining heads (e.g. %s)", source, len(dropped), dropped[0]
        )
    return out


# --------------------------------------------------------------------------------------------
# the key grammar


def parse_key(key: str, num_levels: int) -> ParsedKey:
    """Parse a vox2vec-layout key (see the module docstring); ConversionError if it is not one."""
    if match := _FIRST_KEY.match(key):
        return ParsedKey("first_conv", 0, None, None, match["tensor"])
    if match := _STAGE_KEY.match(key):
        index = int(match["index"])
        part, level = (
            ("encoder", index)
            if match["part"] == "left_blocks"
            else ("decoder", num_levels - 2 - index)
        )
        return ParsedKey(
            part, level, int(match["block"]), _block_layer(key, match), match["tensor"]
        )
    if match := _BOTTOM_KEY.match(key):
        return ParsedKey(
            "bottom", num_levels - 1, int(match["block"]), _block_layer(key, match), match["tensor"]
        )
    if match := _DOWN_KEY.match(key):
        return ParsedKey("down", int(match["index"]), None, None, match["tensor"])
    if match := _UP_KEY.match(key):
        return ParsedKey("up", num_levels - 2 - int(match["index"]), None, None, match["tensor"])
    if match := _SKIP_KEY.match(key):
        return ParsedKey("skip", num_levels - 2 - int(match["index"]), None, None, match["tensor"])
    raise ConversionError(f"key '{key}' is not part of a vox2vec-layout FPN backbone")


def _block_layer(key: str, match: re.Match) -> str:
    layer = _BLOCK_LAYERS.get(int(match["layer"]))
    if layer is None:
        raise ConversionError(
            f"key '{key}': a residual block has no layer {match['layer']} (norm 0, 3; conv 2, 5)"
        )
    is_norm = layer.startswith("norm")
    allowed = _BATCHNORM_TENSORS if is_norm else ("weight", "bias")
    if match["tensor"] not in allowed:
        raise ConversionError(
            f"key '{key}': unexpected tensor '{match['tensor']}' for a {'norm' if is_norm else 'conv'}"
        )
    return layer


def voxssl_key(parsed: ParsedKey, num_levels: int) -> str:
    """The name of ``parsed`` in voxssl's :class:`~voxssl.models.fpn.FPN`.

    voxssl's layout: ``first_conv``; encoder stages ``left_blocks[i]`` and ``down_blocks[i]``
    (index = level); ``bottom_block``; decoder ``up_blocks[k]``, ``skip_blocks[k]``,
    ``right_blocks[k]`` with ``k = L - 2 - level`` (deepest first); inside a stage
    ``layers[j]`` is block j, and a block's ``layers`` Sequential holds norm (0), ReLU, conv (2),
    norm (3), ReLU, conv (5). Down: MaxPool then conv (``.1``); up: conv (``.0``) then Upsample.
    """
    layer_index = {"norm1": 0, "conv1": 2, "norm2": 3, "conv2": 5}
    decoder_index = None if parsed.level is None else num_levels - 2 - parsed.level
    if parsed.part == "first_conv":
        return f"first_conv.{parsed.tensor}"
    if parsed.part in ("encoder", "decoder", "bottom"):
        stage = {
            "encoder": f"left_blocks.{parsed.level}",
            "decoder": f"right_blocks.{decoder_index}",
            "bottom": "bottom_block",
        }[parsed.part]
        if parsed.layer is None:
            raise ValueError(f"a {parsed.part} key names no layer: {parsed}")
        return f"{stage}.layers.{parsed.block}.layers.{layer_index[parsed.layer]}.{parsed.tensor}"
    if parsed.part == "down":
        return f"down_blocks.{parsed.level}.1.{parsed.tensor}"
    if parsed.part == "up":
        return f"up_blocks.{decoder_index}.0.{parsed.tensor}"
    if parsed.part == "skip":
        return f"skip_blocks.{decoder_index}.{parsed.tensor}"
    raise ValueError(f"unknown part {parsed.part!r}")


def infer_fpn_shape(state: Mapping[str, torch.Tensor], source: str = "<checkpoint>") -> FPNShape:
    """Read in/base channels, number of levels and blocks per stage off the tensors."""
    first = state.get("first_conv.weight")
    if first is None or first.ndim != 5:
        found = ", ".join(list(state)[:3]) or "no keys"
        raise ConversionError(
            f"{source}: no 3D 'first_conv.weight' tensor: not a vox2vec-layout FPN backbone (first keys: {found})"
        )
    encoder_levels = {
        int(m["index"])
        for key in state
        if (m := _STAGE_KEY.match(key)) and m["part"] == "left_blocks"
    }
    blocks = {
        int(m["block"])
        for key in state
        if (m := _STAGE_KEY.match(key)) and m["part"] == "left_blocks" and m["index"] == "0"
    }
    if not blocks:
        blocks = {int(m["block"]) for key in state if (m := _BOTTOM_KEY.match(key))}
    if not blocks:
        raise ConversionError(
            f"{source}: no residual blocks found (keys 'left_blocks.0.layers.*' or 'bottom_block.layers.*')"
        )
    return FPNShape(
        in_channels=int(first.shape[1]),
        base_channels=int(first.shape[0]),
        num_levels=(max(encoder_levels) + 2) if encoder_levels else 1,
        blocks_per_stage=max(blocks) + 1,
    )


def map_state_dict(
    foreign: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    num_levels: int,
    source: str,
) -> dict[str, torch.Tensor]:
    """Place every foreign tensor under its voxssl name; check names and shapes against ``expected``.

    ``expected`` is the state dict of the voxssl backbone the weights must fill. Raises
    :class:`ConversionError` naming the first foreign key that has no place, the first voxssl key
    left empty, or the first shape mismatch.
    """
    mapped: dict[str, torch.Tensor] = {}
    for key, tensor in foreign.items():
        try:
            target = voxssl_key(parse_key(key, num_levels), num_levels)
        except ConversionError as err:
            raise ConversionError(f"{source}: {err}") from None
        if target not in expected:
            raise ConversionError(
                f"{source}: key '{key}' has no counterpart in the voxssl backbone (would be '{target}'); "
                "the checkpoint's depth or blocks per stage differ from the architecture"
            )
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise ConversionError(
                f"{source}: key '{key}' has shape {tuple(tensor.shape)}, but voxssl's '{target}' has "
                f"{tuple(expected[target].shape)}"
            )
        mapped[target] = tensor.detach().clone().to(expected[target].dtype)
    missing = [key for key in expected if key not in mapped and not key.startswith("projections.")]
    if missing:
        raise ConversionError(
            f"{source}: the checkpoint has no tensor for voxssl's '{missing[0]}' ({len(missing)} missing in all)"
        )
    return mapped


# --------------------------------------------------------------------------------------------
# the whole import


@dataclass
class ImportResult:
    path: Path  # the written voxssl .safetensors file
    architecture: dict[str, Any]
    source_sha256: str
    adapted_channels: bool


def import_foreign(
    source: str | os.PathLike,
    out: str | os.PathLike,
    fmt: ForeignFormat,
    *,
    architecture: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    modality: str | None = None,
    in_channels: int | None = None,
    adapt_channels: AdaptChannels = "refuse",
    provenance: Mapping[str, Any] | None = None,
) -> ImportResult:
    """Convert a vox2vec or hierarchical-dense-ssl checkpoint into a voxssl weights file.

    Args:
        source: the foreign ``.pt`` / ``.ckpt`` file.
        out: the ``.safetensors`` file to write (atomically).
        fmt: ``"vox2vec"`` or ``"hierarchical"``.
        architecture: ``model`` recipe fields to use (e.g. from the registry); by default the
            format's preset, with channels, levels and blocks read off the tensors.
        preprocessing: ``preprocess.<modality>`` fields the weights expect (recorded in the plan).
        modality: ``"ct"`` or ``"mr"`` (default: ct for vox2vec; required for hierarchical when
            ``preprocessing`` is given without it).
        in_channels: image channels of the model to build; when it differs from the checkpoint's,
            ``adapt_channels`` decides (``"repeat"``: the first conv is repeated and scaled by
            1/C; ``"refuse"``: ConversionError).
        provenance: recorded in the plan's ``extra`` (registry name, URL...).
    """

    if fmt not in FOREIGN_FORMATS:
        raise ConversionError(f"unknown format {fmt!r}: use one of {', '.join(FOREIGN_FORMATS)}")
    source = Path(source)
    name = str(source)
    state = strip_wrappers(extract_state_dict(read_torch_checkpoint(source), fmt, name), name)
    shape = infer_fpn_shape(state, name)

    config_data = _architecture_for(fmt, shape, architecture)
    target_channels = in_channels if in_channels is not None else int(config_data["in_channels"])
    config_data["in_channels"] = shape.in_channels
    config: ModelConfig = model_config_from_dict(config_data, source=f"{name} (architecture)")
    reference = build_backbone(config).state_dict()
    levels = config.num_levels
    if levels is None:  # model_config_from_dict fills it from the preset
        raise ConversionError(f"{name}: the architecture has no num_levels")
    mapped = map_state_dict(state, reference, levels, name)
    for (
        key,
        value,
    ) in reference.items():  # frozen random projections, if asked for, are voxssl's own
        mapped.setdefault(key, value)

    adapted = target_channels != shape.in_channels
    if adapted:
        mapped = adapt_input_channels(mapped, target_channels, adapt_channels, source=name)
        config = model_config_from_dict(
            {**model_config_to_dict(config), "in_channels": target_channels}, source=name
        )

    modality = (
        modality or (preprocessing or {}).get("modality") or ("ct" if fmt == "vox2vec" else None)
    )
    plan = Plan.for_model(
        config,
        preprocessing=_preprocessing_for(modality, preprocessing, target_channels),
        kind="backbone",
        extra={
            "converted_from": fmt,
            "source_file": source.name,
            "source_sha256": (source_sha := sha256_of(source)),
            **(
                {"adapted_channels": f"{shape.in_channels}->{target_channels} ({adapt_channels})"}
                if adapted
                else {}
            ),
            **(
                {
                    "note": "the published code never saved its per-level projections; imported with projection: none"
                }
                if fmt == "hierarchical"
                else {}
            ),
            **dict(provenance or {}),
        },
    )
    path = save_weights(out, mapped, plan)
    _check_round_trip(path)
    return ImportResult(
        path=Path(path),
        architecture=model_config_to_dict(config),
        source_sha256=source_sha,
        adapted_channels=adapted,
    )


def _architecture_for(
    fmt: ForeignFormat, shape: FPNShape, given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The format's preset, with what the tensors say, overridden by what the caller gives."""
    read_off = {
        "in_channels": shape.in_channels,
        "base_channels": shape.base_channels,
        "num_levels": shape.num_levels,
        "blocks_per_stage": shape.blocks_per_stage,
    }
    data: dict[str, Any] = {"preset": fmt, **read_off}
    if fmt == "hierarchical":
        data.update(projection="none", reconstruction="none")
    for key, value in (given or {}).items():
        if key in read_off and key != "in_channels" and value != read_off[key]:
            raise ConversionError(
                f"architecture.{key} is {value} but the checkpoint's tensors say {read_off[key]}: "
                "these weights are not of that architecture"
            )
        data[key] = value
    return data


def _preprocessing_for(
    modality: str | None, given: Mapping[str, Any] | None, in_channels: int
) -> dict[str, Any]:
    """The plan's preprocessing section in the layout of :func:`voxssl.models.plan.preprocessing_plan`."""
    if modality is None:
        return {"in_channels": in_channels}

    params = {k: v for k, v in (given or {}).items() if k != "modality"}
    preprocess = from_dict(
        PreprocessConfig, {modality: params}, where="preprocess", source="<weights import>"
    )
    return preprocessing_plan(modality, preprocess, in_channels=in_channels)


def _check_round_trip(path: Path) -> None:
    """Load the written file the way every user will (strict, through the plan)."""

    load_backbone(path)


__all__ = [
    "FOREIGN_FORMATS",
    "FPNShape",
    "ImportResult",
    "ParsedKey",
    "extract_state_dict",
    "import_foreign",
    "infer_fpn_shape",
    "map_state_dict",
    "parse_key",
    "read_torch_checkpoint",
    "strip_wrappers",
    "voxssl_key",
]
