"""The *plan*: everything needed to rebuild and correctly use a set of weights, stored with them.

A plan answers the usual questions about somebody else's checkpoint before a single tensor is
loaded: which architecture (the full :class:`~voxssl.config.model.ModelConfig`), which input
(modality, channels, spacing, intensity normalisation), how it was trained (the resolved recipe)
and by which voxssl version. :mod:`voxssl.models.weights` stores it as JSON in the safetensors
header and checks it at load time.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from voxssl import __version__
from voxssl.config.loader import to_dict
from voxssl.config.model import ModelConfig, model_config_from_dict, model_config_to_dict
from voxssl.errors import CheckpointError, ConfigError

PLAN_FORMAT_VERSION = 1
KINDS = ("backbone", "pretrain", "segmentation", "classification")


@dataclass
class Plan:
    architecture: dict[str, Any]  # ModelConfig as plain data (every field resolved)
    preprocessing: dict[str, Any] = field(
        default_factory=dict
    )  # modality, in_channels, spacing, intensity
    recipe: dict[str, Any] = field(
        default_factory=dict
    )  # the resolved recipe that produced the weights
    kind: str = (
        "backbone"  # backbone | pretrain (backbone.* + heads) | segmentation (backbone.* + head.*)
    )
    voxssl_version: str = __version__
    format_version: int = PLAN_FORMAT_VERSION
    extra: dict[str, Any] = field(
        default_factory=dict
    )  # provenance: source, converter, step, classes...

    @classmethod
    def for_model(
        cls,
        config: ModelConfig,
        preprocessing: dict[str, Any] | None = None,
        recipe: dict[str, Any] | None = None,
        kind: str = "backbone",
        extra: dict[str, Any] | None = None,
    ) -> Plan:
        return cls(
            architecture=model_config_to_dict(config),
            preprocessing=dict(preprocessing or {}),
            recipe=dict(recipe or {}),
            kind=kind,
            extra=dict(extra or {}),
        )

    def model_config(self, source: str = "<plan>") -> ModelConfig:
        """The architecture as a validated :class:`ModelConfig` (CheckpointError if it is not one)."""
        if self.architecture.get("family") == "dinov2":  # voxssl.models.vit
            raise CheckpointError(
                f"{source}: these are DINOv2 ViT weights (2D), not a voxssl 3D backbone; use them "
                f"with `voxssl classify` or as fewshot.encoder.weights"
            )
        try:
            return model_config_from_dict(self.architecture, source=f"{source} (plan.architecture)")
        except ConfigError as err:
            raise CheckpointError(str(err)) from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, source: str = "<plan>") -> Plan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{source}: the plan is not valid JSON ({err})") from None
        if not isinstance(data, dict) or not isinstance(data.get("architecture"), dict):
            raise CheckpointError(f"{source}: the plan has no 'architecture' mapping")
        version = data.get("format_version", PLAN_FORMAT_VERSION)
        if not isinstance(version, int) or version > PLAN_FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: plan format {version!r} is newer than this voxssl supports "
                f"({PLAN_FORMAT_VERSION}); upgrade voxssl"
            )
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown plan field '{unknown[0]}'")
        if data.get("kind", "backbone") not in KINDS:
            raise CheckpointError(
                f"{source}: plan field 'kind' must be one of {', '.join(KINDS)}, got {data['kind']!r}"
            )
        return cls(**data)


def preprocessing_plan(modality: str, preprocess: Any, in_channels: int = 1) -> dict[str, Any]:
    """The ``preprocessing`` part of a plan from a recipe's ``preprocess`` section.

    ``preprocess`` is a :class:`voxssl.config.data.PreprocessConfig`; the sub-section of
    ``modality`` ("ct" or "mr") is recorded, spacing at the top level, the rest under ``intensity``.
    """

    params = to_dict(getattr(preprocess, modality))
    spacing = params.pop("spacing", None)
    return {
        "modality": modality,
        "in_channels": in_channels,
        "spacing": spacing,
        "intensity": params,
    }


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (keys already dotted are kept)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(actual) == len(expected) and all(
            _same(a, e) for a, e in zip(actual, expected, strict=True)
        )
    numbers = (int, float)
    if (
        isinstance(expected, numbers)
        and isinstance(actual, numbers)
        and not isinstance(expected, bool)
    ):
        return not isinstance(actual, bool) and math.isclose(
            actual, expected, rel_tol=1e-6, abs_tol=1e-9
        )
    return actual == expected


def check_plan(plan: Plan, expect: dict[str, Any] | None, source: str = "<weights>") -> None:
    """Raise :class:`CheckpointError` naming the first plan field that differs from ``expect``.

    ``expect`` is nested like the plan (``{"preprocessing": {"modality": "ct"}}``) or uses dotted
    keys (``{"preprocessing.modality": "ct", "architecture.in_channels": 1}``); numbers compare
    with a relative tolerance of 1e-6, lists item by item.
    """
    if not expect:
        return
    actual = flatten(asdict(plan))
    for key, wanted in flatten(expect).items():
        if key not in actual:
            raise CheckpointError(f"{source}: the plan has no field '{key}' (expected {wanted!r})")
        if not _same(actual[key], wanted):
            raise CheckpointError(
                f"{source}: plan field '{key}' is {actual[key]!r} but {wanted!r} is expected here "
                f"(these weights were made for a different setting)"
            )


__all__ = ["KINDS", "PLAN_FORMAT_VERSION", "Plan", "check_plan", "flatten", "preprocessing_plan"]
