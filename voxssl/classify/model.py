"""The classifier: a DINOv2 ViT and a head on its CLS token (optionally with the mean patch token).

Two classes use one logit (sigmoid, binary cross-entropy; MediDino), more use one logit per class
(softmax, cross-entropy). The head is MediDino's ``Linear(D, 256)-ReLU-Linear(256, outputs)``
(``mlp``) or one Linear layer (``linear``, the usual linear probe). Weights are saved as voxssl ViT
weights of kind ``classification`` (``backbone.*`` + ``head.*``), with the class names and the
head in the plan, so that ``voxssl classify eval`` rebuilds the model from the file alone and the
backbone also serves as an encoder (:mod:`voxssl.models.vit`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from voxssl.errors import CheckpointError
from voxssl.models.vit import build_vit, vit_plan
from voxssl.models.weights import load_state_strict, load_weights, save_weights

if TYPE_CHECKING:  # annotations only: transformers is an optional dependency
    from transformers import Dinov2Model


@dataclass(frozen=True)
class HeadSpec:
    class_names: tuple[str, ...]
    head: str = "mlp"  # mlp | linear
    hidden: int = 256
    features: str = "cls"  # cls | cls_mean
    image_size: int = 224
    normalise_imagenet: bool = True

    @property
    def num_outputs(self) -> int:
        return 1 if len(self.class_names) == 2 else len(self.class_names)

    @property
    def binary(self) -> bool:
        return len(self.class_names) == 2

    def to_dict(self) -> dict:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        return data

    @classmethod
    def from_dict(cls, data: dict, source: str) -> HeadSpec:
        try:
            return cls(**{**data, "class_names": tuple(data["class_names"])})
        except (KeyError, TypeError) as err:
            raise CheckpointError(
                f"{source}: malformed classification head in the plan ({err})"
            ) from None


def build_head(in_features: int, spec: HeadSpec) -> nn.Module:
    if spec.head == "linear":
        return nn.Linear(in_features, spec.num_outputs)
    return nn.Sequential(
        nn.Linear(in_features, spec.hidden), nn.ReLU(), nn.Linear(spec.hidden, spec.num_outputs)
    )


def feature_width(backbone: Dinov2Model, spec: HeadSpec) -> int:
    width = int(backbone.config.hidden_size)
    return 2 * width if spec.features == "cls_mean" else width


def pooled_features(tokens: torch.Tensor, features: str) -> torch.Tensor:
    """(N, 1 + P, D) normalised tokens -> (N, D) CLS, or (N, 2D) CLS and the mean patch token."""
    cls = tokens[:, 0]
    if features == "cls_mean":
        return torch.cat([cls, tokens[:, 1:].mean(dim=1)], dim=1)
    return cls


class Classifier(nn.Module):
    def __init__(self, backbone: Dinov2Model, spec: HeadSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec
        self.head = build_head(feature_width(backbone, spec), spec)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone(pixel_values=images).last_hidden_state
        return pooled_features(tokens, self.spec.features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, outputs) logits."""
        return self.head(self.features(images))


def loss_function(spec: HeadSpec, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if spec.binary:
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], labels.float())
    return nn.functional.cross_entropy(logits, labels)


def probabilities(spec: HeadSpec, logits: torch.Tensor) -> torch.Tensor:
    """(N, classes): sigmoid of the one logit as (1 - p, p) for two classes, softmax otherwise."""
    logits = logits.float()
    if spec.binary:
        positive = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    return torch.softmax(logits, dim=1)


def save_classifier(
    path: Path, model: Classifier, preprocessing: dict, recipe: dict, extra: dict
) -> Path:

    plan = vit_plan(
        model.backbone,
        preprocessing,
        recipe,
        kind="classification",
        extra={**extra, "classification": model.spec.to_dict()},
    )
    return save_weights(path, model.state_dict(), plan)


def load_classifier(path: Path, device: str | torch.device = "cpu") -> tuple[Classifier, object]:
    """``(Classifier, plan)`` from a file written by :func:`save_classifier` (strict, no pickle)."""

    state, plan = load_weights(path, device=device)
    if plan.kind != "classification" or "classification" not in plan.extra:
        raise CheckpointError(
            f"{path}: not a voxssl classifier (plan kind {plan.kind!r}); `voxssl classify eval` "
            "takes a `classify train` run folder or one of its fold model.safetensors"
        )
    spec = HeadSpec.from_dict(plan.extra["classification"], str(path))
    model = Classifier(build_vit(plan.architecture, str(path)), spec).to(device)
    load_state_strict(model, state, str(path))
    return model.eval(), plan


__all__ = [
    "Classifier",
    "HeadSpec",
    "build_head",
    "load_classifier",
    "loss_function",
    "pooled_features",
    "probabilities",
    "save_classifier",
]
