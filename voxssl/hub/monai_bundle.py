"""Export voxssl weights as a MONAI bundle that ``python -m monai.bundle run`` executes on NIfTI files.

Layout (MONAI's bundle specification)::

    <out>/
      configs/metadata.json    network_data_format (inputs, outputs), versions, licence
      configs/inference.json   load -> RAS -> spacing -> crop -> intensity -> sliding window ->
                               (probabilities -> back to the original grid -> label) -> NIfTI
      models/model.pt          the network's state dict, tensors only (MONAI's CheckpointLoader
                               reads it with torch.load(weights_only=True): no code runs)
      docs/README.md           the model card

The network is :class:`BundleNetwork`: the voxssl backbone plus the segmentation head when the
weights have one (output: a label map in canonical voxssl ids), else the voxel embedding
(output: a (D, X, Y, Z) feature image on the preprocessed grid). Running the bundle needs voxssl
installed (``_target_`` refers to voxssl classes). Usage::

    python -m monai.bundle run --config_file <out>/configs/inference.json \\
        --bundle_root <out> --dataset_dir /path/to/niftis --output_dir /path/to/predictions
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from voxssl import __version__
from voxssl.config.model import model_config_from_dict
from voxssl.hub.errors import ConversionError
from voxssl.hub.resolve import resolve_weights
from voxssl.models.build import build_backbone
from voxssl.models.segmentation import probabilities_to_label
from voxssl.models.segmentation_heads import upsample_to
from voxssl.models.segmentation_weights import SEGMENTATION_KEY, SegmentationSpec
from voxssl.models.weights import load_weights, strip_prefixes
from voxssl.utils.atomic import atomic_directory
from voxssl.vocabulary import ORGANS as ORGAN_NAMES

DEFAULT_ROI = [128, 128, 32]
METADATA_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


class BundleNetwork(nn.Module):
    """Backbone (+ segmentation head) rebuilt from plain config data, for MONAI bundles.

    Args:
        architecture: the plan's architecture (``model`` recipe fields).
        segmentation: the plan's ``extra.segmentation`` spec, or None for an embedding network.

    ``forward`` returns head logits ``(B, K, X, Y, Z)``, or the voxel embedding ``(B, D, X, Y, Z)``
    (every level read at ``v // 2**i`` and concatenated).
    """

    def __init__(
        self, architecture: Mapping[str, Any], segmentation: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()

        self.backbone = build_backbone(
            model_config_from_dict(dict(architecture), source="bundle network")
        )
        self.head: nn.Module | None = None
        if segmentation is not None:
            spec = SegmentationSpec.from_plan_extra(
                {SEGMENTATION_KEY: dict(segmentation)}, "bundle network"
            )
            self.head = spec.build_head()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        pyramid = self.backbone(image)
        if self.head is not None:
            return self.head(pyramid)

        size = image.shape[2:]
        return torch.cat([upsample_to(level, i, size) for i, level in enumerate(pyramid)], dim=1)


class ProbabilitiesToLabeld:
    """MONAI dictionary transform: per-class probabilities ``(K, X, Y, Z)`` -> label ``(1, X, Y, Z)``
    in canonical voxssl ids, with voxssl's decision rule (:func:`voxssl.eval.inference.probabilities_to_label`).
    The image metadata (affine) is kept so that ``SaveImaged`` writes the right geometry."""

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        classes: Sequence[int],
        kind: str,
        threshold: float = 0.5,
    ):
        self.keys = (
            [keys]
            if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence)
            else list(keys)
        )
        self.classes, self.kind, self.threshold = list(classes), kind, float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from monai.data import MetaTensor

        out = dict(data)
        for key in self.keys:
            probs = out[key]
            label = probabilities_to_label(
                probs.detach().cpu().float(), self.classes, self.kind, self.threshold
            )
            tensor = torch.as_tensor(label[None].astype("uint8"))
            out[key] = (
                MetaTensor(tensor, meta=probs.meta) if isinstance(probs, MetaTensor) else tensor
            )
        return out


class BundleInference:
    """The bundle's ``run``: load ``models/model.pt`` (tensors only, strict), then for every image
    sliding-window inference and the postprocessing chain (which writes the NIfTI files).

    A plain loop instead of an ignite ``SupervisedEvaluator``, so running the bundle needs no
    pytorch-ignite; MONAI's ``python -m monai.bundle`` itself needs ``fire``.
    """

    def __init__(
        self,
        dataloader,
        network: nn.Module,
        inferer,
        postprocessing,
        weights: str | os.PathLike,
        device: str | torch.device = "cpu",
    ) -> None:
        self.dataloader, self.network, self.inferer = dataloader, network, inferer
        self.postprocessing, self.weights, self.device = (
            postprocessing,
            Path(weights),
            torch.device(device),
        )

    def load_weights(self) -> None:
        state = torch.load(self.weights, map_location=self.device, weights_only=True)
        self.network.load_state_dict(state, strict=True)

    def run(self) -> int:
        """Predict every image of the data loader; returns how many were written."""
        from monai.data import decollate_batch

        self.load_weights()
        self.network.to(self.device).eval()
        count = 0
        with torch.no_grad():
            for batch in self.dataloader:
                batch["pred"] = self.inferer(batch["image"].to(self.device), self.network)
                for item in decollate_batch(batch):
                    self.postprocessing(item)
                    count += 1
        return count


def export_monai_bundle(
    weights: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    roi_size: Sequence[int] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a MONAI bundle for ``weights`` (anything :func:`resolve_weights` accepts); returns ``out``."""

    out = Path(out)
    if out.exists() and not overwrite:
        raise ConversionError(f"{out} already exists; choose another --out or pass --overwrite")
    source = resolve_weights(weights)
    state, plan = load_weights(source)
    segmentation = plan.extra.get("segmentation") if plan.kind == "segmentation" else None
    if segmentation is not None:
        tensors = {k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}
    else:
        tensors = {f"backbone.{k}": v for k, v in strip_prefixes(state).items()}
    network = BundleNetwork(plan.architecture, segmentation)
    network.load_state_dict(
        tensors, strict=True
    )  # the bundle must hold exactly the network's tensors

    trained_roi = (segmentation or {}).get("sw_roi_size") or (segmentation or {}).get("patch_size")
    roi = list(roi_size or trained_roi or DEFAULT_ROI)
    name = name or out.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(out) as staging:
        for folder in ("configs", "models", "docs"):
            (staging / folder).mkdir()
        torch.save(
            {k: v.contiguous() for k, v in network.state_dict().items()},
            staging / "models" / "model.pt",
        )
        config = inference_config(plan.architecture, plan.preprocessing, segmentation, roi)
        (staging / "configs" / "inference.json").write_text(
            json.dumps(config, indent=2) + "\n", encoding="utf-8"
        )
        metadata = bundle_metadata(name, plan, segmentation, roi, network)
        (staging / "configs" / "metadata.json").write_text(
            json.dumps(metadata, indent=2) + "\n", encoding="utf-8"
        )
        (staging / "docs" / "README.md").write_text(
            _bundle_readme(name, plan, segmentation), encoding="utf-8"
        )
    return out


def preprocessing_transforms(preprocessing: Mapping[str, Any]) -> list[dict[str, Any]]:
    """MONAI transforms reproducing voxssl's preprocessing recorded in a plan."""
    modality = preprocessing.get("modality")
    intensity = preprocessing.get("intensity", {})
    spacing = preprocessing.get("spacing")
    if modality not in ("ct", "mr") or spacing is None:
        raise ConversionError(
            "the weights' plan does not record the modality and spacing they expect; re-import them with "
            "--modality (voxssl weights import) before exporting a MONAI bundle"
        )
    transforms: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": False},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": list(spacing), "mode": "bilinear"},
    ]
    if modality == "ct":
        low, high = intensity.get("window_hu", (-1350.0, 1000.0))
        threshold = intensity.get("crop_threshold_hu", -500.0)
        transforms += [
            _crop(threshold),
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": low,
                "a_max": high,
                "b_min": 0.0,
                "b_max": 1.0,
                "clip": True,
            },
        ]
    else:
        low, high = intensity.get("percentiles", (0.01, 99.9))
        transforms += [
            {
                "_target_": "ScaleIntensityRangePercentilesd",
                "keys": "image",
                "lower": low,
                "upper": high,
                "b_min": 0.0,
                "b_max": 1.0,
                "clip": True,
                "channel_wise": True,
            },
            _crop(intensity.get("crop_threshold", 0.3)),
        ]
    transforms.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"})
    return transforms


def _crop(threshold: float) -> dict[str, Any]:
    return {
        "_target_": "CropForegroundd",
        "keys": "image",
        "source_key": "image",
        "select_fn": f"$lambda x: x > {float(threshold)!r}",
        "margin": 0,
        "allow_smaller": True,
    }


def inference_config(
    architecture: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any] | None,
    roi: Sequence[int],
) -> dict[str, Any]:
    """The ``configs/inference.json`` content (MONAI inference layout, run by :class:`BundleInference`)."""
    overlap = float((segmentation or {}).get("sw_overlap", 0.5))
    mode = (segmentation or {}).get("sw_mode", "gaussian")
    post: list[dict[str, Any]]
    if segmentation is not None:
        kind = segmentation["loss"]
        post = [
            {
                "_target_": "Activationsd",
                "keys": "pred",
                "sigmoid": kind == "bce",
                "softmax": kind != "bce",
            },
            {
                "_target_": "Invertd",
                "keys": "pred",
                "transform": "@preprocessing",
                "orig_keys": "image",
                "nearest_interp": False,
                "to_tensor": True,
            },
            {
                "_target_": "voxssl.hub.monai_bundle.ProbabilitiesToLabeld",
                "keys": "pred",
                "classes": list(segmentation["classes"]),
                "kind": kind,
                "threshold": float(segmentation["threshold"]),
            },
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "seg",
                "output_dtype": "$numpy.uint8",
                "resample": False,
                "separate_folder": False,
                "print_log": False,
            },
        ]
    else:  # embeddings stay on the preprocessed grid (their affine places them in the scanner space)
        post = [
            {
                "_target_": "SaveImaged",
                "keys": "pred",
                "output_dir": "@output_dir",
                "output_postfix": "embedding",
                "output_dtype": "$numpy.float32",
                "resample": False,
                "separate_folder": False,
                "print_log": False,
            },
        ]
    return {
        "imports": [
            "$import glob",
            "$import os",
            "$import numpy",
            "$import torch",
            "$import voxssl.hub.monai_bundle",
        ],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "network_def": {
            "_target_": "voxssl.hub.monai_bundle.BundleNetwork",
            "architecture": dict(architecture),
            "segmentation": None if segmentation is None else dict(segmentation),
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": preprocessing_transforms(preprocessing),
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(roi),
            "sw_batch_size": 1,
            "overlap": overlap,
            "mode": mode,
        },
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "inference": {
            "_target_": "voxssl.hub.monai_bundle.BundleInference",
            "dataloader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "weights": "$@bundle_root + '/models/model.pt'",
            "device": "@device",
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@inference.run()"],
    }


def bundle_metadata(
    name: str,
    plan: Any,
    segmentation: Mapping[str, Any] | None,
    roi: Sequence[int],
    network: BundleNetwork,
) -> dict[str, Any]:
    import monai
    import numpy

    preprocessing = plan.preprocessing
    modality = preprocessing.get("modality", "ct")
    in_channels = int(plan.architecture.get("in_channels", 1))
    if segmentation is not None:
        classes = list(segmentation["classes"])
        channel_def = {
            "0": "background",
            **{str(c): ORGAN_NAMES.get(c, f"class {c}") for c in classes},
        }
        output = {
            "type": "image",
            "format": "labels",
            "dtype": "uint8",
            "value_range": [0, max(classes)],
            "num_channels": 1,
            "spatial_shape": ["*", "*", "*"],
            "is_patch_data": False,
            "channel_def": channel_def,
        }
        task = "voxel-wise segmentation of " + ", ".join(channel_def[str(c)] for c in classes)
    else:
        width = sum(network.backbone.level_channels)
        output = {
            "type": "image",
            "format": "embedding",
            "dtype": "float32",
            "value_range": [],
            "num_channels": width,
            "spatial_shape": ["*", "*", "*"],
            "is_patch_data": False,
            "channel_def": {"0": f"{width}-d voxel embedding"},
        }
        task = "dense voxel embeddings for self-supervised transfer"
    return {
        "schema": METADATA_SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by voxssl"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__,
        "required_packages_version": {"voxssl": __version__, "nibabel": _version("nibabel")},
        "name": name,
        "task": task,
        "description": f"voxssl {plan.architecture.get('preset')} backbone"
        + (" with a segmentation head" if segmentation else ""),
        "authors": "voxssl",
        "copyright": "see docs/README.md",
        "data_source": json.dumps(
            plan.extra.get("registry_name", plan.extra.get("source_file", "voxssl"))
        ),
        "data_type": "nibabel",
        "image_classes": f"{in_channels}-channel {modality.upper()} image, {preprocessing.get('spacing')} mm after resampling",
        "label_classes": "canonical voxssl organ ids (voxssl.vocabulary)"
        if segmentation
        else "none",
        "pred_classes": "see network_data_format.outputs.pred.channel_def",
        "eval_metrics": {},
        "intended_use": "research only; not for clinical use",
        "references": [],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if modality == "ct" else "magnitude",
                    "modality": modality.upper(),
                    "num_channels": in_channels,
                    "spatial_shape": list(roi),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(i): f"image channel {i}" for i in range(in_channels)},
                }
            },
            "outputs": {"pred": output},
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _bundle_readme(name: str, plan: Any, segmentation: Mapping[str, Any] | None) -> str:
    return f"""# {name} (MONAI bundle exported by voxssl)

Needs voxssl installed (the network and one transform are voxssl classes).

```
python -m monai.bundle run --config_file configs/inference.json \\
    --bundle_root . --dataset_dir /path/to/niftis --output_dir /path/to/output
```

Output: {
        "a label map per image (canonical voxssl organ ids) on the original image grid"
        if segmentation
        else "a voxel-embedding image per image, on the resampled (preprocessed) grid"
    }.

Weights: `models/model.pt`, a state dict of tensors only (loaded with `torch.load(weights_only=True)`).

Plan of the weights (architecture, preprocessing, provenance):

```json
{json.dumps(json.loads(plan.to_json()), indent=2, sort_keys=True)}
```
"""


__all__ = [
    "BundleNetwork",
    "ProbabilitiesToLabeld",
    "export_monai_bundle",
    "inference_config",
    "preprocessing_transforms",
]
