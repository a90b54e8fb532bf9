"""The weights a probe or fine-tune run produces, and ``voxssl predict`` consumes.

One voxssl safetensors file (:mod:`voxssl.models.weights`) of plan kind ``segmentation``:

* tensors ``backbone.*`` (the FPN, loadable by ``load_backbone`` for further fine-tuning) and
  ``head.*`` (the segmentation head);
* ``plan.architecture``: the backbone; ``plan.preprocessing``: modality, spacing and intensity
  parameters, so that ``voxssl predict`` preprocesses a new scan exactly like the training data;
* ``plan.extra["segmentation"]``: the head spec (kind, widths), the classes (canonical ids, in
  output-channel order), the loss kind (sigmoid / softmax decision rule), threshold, patch size
  and sliding-window settings, and whether predictions are restricted to the body mask.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from voxssl.errors import CheckpointError
from voxssl.models.build import build_backbone
from voxssl.models.plan import Plan
from voxssl.models.segmentation import SegmentationModel, output_channels
from voxssl.models.segmentation_heads import build_head
from voxssl.models.weights import load_state_strict, load_weights, save_weights

SEGMENTATION_KEY = "segmentation"


@dataclass
class SegmentationSpec:
    """What a segmentation model needs besides the backbone (stored in the plan)."""

    classes: list[int]  # canonical ids, output channel order (after background for ce)
    head_kind: str
    head_in_channels: list[int]
    head_hidden: int
    head_blocks_per_level: int
    loss: str  # bce | ce
    threshold: float
    sw_roi_size: list[int]
    sw_overlap: float
    sw_mode: str
    body_restricted: bool
    head_feature_norm: str = "none"  # absent in files written before the option existed
    features: str = "projected"  # the pyramid the head reads (voxssl.models.features)

    @property
    def num_outputs(self) -> int:

        return output_channels(self.loss, len(self.classes))

    def build_head(self) -> torch.nn.Module:

        return build_head(
            self.head_kind,
            self.head_in_channels,
            self.num_outputs,
            self.head_hidden,
            self.head_blocks_per_level,
            self.head_feature_norm,
        )

    @classmethod
    def from_plan_extra(cls, extra: dict[str, Any], source: str) -> SegmentationSpec:
        data = extra.get(SEGMENTATION_KEY)
        if not isinstance(data, dict):
            raise CheckpointError(
                f"{source}: these are backbone weights without a segmentation head; train one with "
                f"`voxssl linear-probe` or `voxssl fine-tune` and predict with its model.safetensors"
            )
        try:
            return cls(**data)
        except TypeError as err:
            raise CheckpointError(f"{source}: malformed plan.extra.segmentation ({err})") from None


def save_segmentation_weights(
    path: str | os.PathLike, model: SegmentationModel, spec: SegmentationSpec, base_plan
) -> Path:
    """Write backbone.* + head.* with a ``segmentation`` plan derived from the backbone's plan."""

    state = {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()}
    state.update({f"head.{k}": v for k, v in model.head.state_dict().items()})
    plan = Plan(
        architecture=dict(base_plan.architecture),
        preprocessing=dict(base_plan.preprocessing),
        recipe=dict(base_plan.recipe),
        kind="segmentation",
        extra={**base_plan.extra, SEGMENTATION_KEY: asdict(spec)},
    )
    return save_weights(path, state, plan)


def load_segmentation_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """``(SegmentationModel in eval mode, SegmentationSpec, Plan)`` from a segmentation weights file."""

    path = Path(path)
    state, plan = load_weights(path, device=device)
    spec = SegmentationSpec.from_plan_extra(plan.extra, str(path))
    backbone = build_backbone(plan.model_config(source=str(path)))
    head = spec.build_head()
    load_state_strict(backbone, _sub_state(state, "backbone."), source=f"{path} (backbone)")
    load_state_strict(head, _sub_state(state, "head."), source=f"{path} (head)")
    model = SegmentationModel(backbone, head, loss_kind=spec.loss, features=spec.features)
    model = model.to(device).eval()
    return model, spec, plan


def _sub_state(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


__all__ = [
    "SEGMENTATION_KEY",
    "SegmentationSpec",
    "load_segmentation_model",
    "save_segmentation_weights",
]
