"""Export voxssl weights as a MONAI bundle that ``python -m monai.bundle run`` executes on NIfTI files.

Layout (MONAI's bundle specification)::

    <out>/
      configs/metadata.json    network_data_format (inputs, outputs), versions, licence
      configs/inference.json   load -> voxssl preprocessing -> sliding window (probabilities) ->
                               body mask -> back to the original grid -> label -> NIfTI
      models/model.pt          the network's state dict, tensors only (loaded with
                               torch.load(weights_only=True): no code runs)
      docs/README.md           the model card

The bundle gives the labels ``voxssl predict`` gives, voxel for voxel: its transforms are thin
MONAI dictionary transforms around voxssl's own steps (:class:`LoadScand` reads and reorients
like voxssl, :class:`VoxsslPreprocessd` runs :func:`voxssl.data.preprocess.preprocess_volume` --
intensity percentiles on the source before resampling, voxssl's resampling grid and crop -- the
inferer is MONAI's ``SlidingWindowInferer`` with predict's settings (probabilities blended,
edge padding, the same window batch), :class:`RestrictToBodyd` applies predict's body mask and
:class:`SaveLabeld` maps back and writes with the scan's qform/sform). MONAI's generic
``Spacingd`` / ``ScaleIntensityRangePercentilesd`` / ``CropForegroundd`` chain cannot do that:
its grid, its percentiles (after resampling) and its crop differ from voxssl's.

The network is :class:`voxssl.hub.monai_bundle.BundleNetwork`: the voxssl backbone plus the segmentation head when the
weights have one (output: per-class probabilities, decided into canonical voxssl ids), else the
voxel embedding (output: a (D, X, Y, Z) feature image on the preprocessed grid). Running the
bundle needs voxssl installed (``_target_`` refers to voxssl classes). Usage::

    python -m monai.bundle run --config_file <out>/configs/inference.json \\
        --bundle_root <out> --dataset_dir /path/to/niftis --output_dir /path/to/predictions
"""

from __future__ import annotations

import json
import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxssl import __version__
from voxssl.config.data import PreprocessConfig
from voxssl.config.loader import from_dict
from voxssl.data.preprocess import preprocess_volume
from voxssl.data.readers import nifti_geometry, read_volume
from voxssl.errors import DataError
from voxssl.eval.inference import (
    Interpolation,
    label_in_original_geometry,
    restrict_to_body,
    write_label_nifti,
)
from voxssl.eval.predict import (
    PADDING_MODE,
    PREDICT_SW_BATCH_SIZE,
    output_name,
    warn_if_thinner_than_window,
)
from voxssl.hub.errors import ConversionError
from voxssl.hub.monai_bundle import BundleNetwork
from voxssl.hub.resolve import resolve_weights
from voxssl.models.weights import load_weights, strip_prefixes
from voxssl.utils.atomic import atomic_directory, atomic_path
from voxssl.vocabulary import ORGANS as ORGAN_NAMES

DEFAULT_ROI = [128, 128, 32]
METADATA_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


def _keys(keys: Hashable | Sequence[Hashable]) -> list[Hashable]:
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        return [keys]
    return list(keys)


class LoadScand:
    """Read the scan named by ``data[key]`` like voxssl does (:func:`voxssl.data.readers.read_volume`:
    NIfTI or a DICOM folder, reoriented to RAS, header checked before any voxel is read)."""

    def __init__(self, keys: Hashable | Sequence[Hashable], in_channels: int = 1) -> None:
        self.keys, self.in_channels = _keys(keys), int(in_channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:

        out = dict(data)
        for key in self.keys:
            path = Path(out[key])
            volume = read_volume(path, allow_channels=self.in_channels > 1)
            if volume.num_channels != self.in_channels:
                raise DataError(
                    f"{path}: {volume.num_channels} channel(s), the weights expect {self.in_channels}"
                )
            out[f"{key}_path"], out[f"{key}_volume"] = str(path), volume
        return out


class VoxsslPreprocessd:
    """voxssl's preprocessing (:func:`voxssl.data.preprocess.preprocess_volume`) as recorded in
    the weights' plan: intensity mapping from the source voxels (CT window, or MR percentiles
    before resampling), voxssl's resampling grid and foreground crop, the body mask.

    Sets ``data[key]`` to the preprocessed image ``(C, X, Y, Z)`` float32, ``data["body_mask"]``
    and ``data["voxssl_meta"]`` (what maps results back to the scan's grid)."""

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        modality: str,
        preprocessing: Mapping[str, Any],
        roi_size: Sequence[int] | None = None,
    ) -> None:

        self.keys, self.modality = _keys(keys), modality
        section = {"spacing": preprocessing["spacing"], **preprocessing.get("intensity", {})}
        self.config = from_dict(
            PreprocessConfig, {modality: section}, where="preprocess", source="bundle"
        )
        self.roi_size = list(roi_size) if roi_size is not None else None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:

        out = dict(data)
        for key in self.keys:
            volume = out.pop(f"{key}_volume")
            image, _, body, meta = preprocess_volume(volume, self.modality, self.config)
            if self.roi_size is not None:
                warn_if_thinner_than_window(
                    Path(out[f"{key}_path"]), image.shape[-3:], self.roi_size
                )
            image = image if image.ndim == 4 else image[None]
            out[key] = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
            out["body_mask"], out["voxssl_meta"] = body, meta
            out["voxssl_geometry_source"] = out[f"{key}_path"]
        return out


class RestrictToBodyd:
    """voxssl predict's body-mask step: outside ``data["body_mask"]`` every voxel is background
    (:func:`voxssl.eval.inference.restrict_to_body`); a no-op when ``enabled`` is False."""

    def __init__(self, keys: Hashable | Sequence[Hashable], kind: str, enabled: bool = True):
        self.keys, self.kind, self.enabled = _keys(keys), kind, bool(enabled)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:

        out = dict(data)
        if self.enabled:
            for key in self.keys:
                out[key] = restrict_to_body(torch.as_tensor(out[key]), out["body_mask"], self.kind)
        return out


class SaveLabeld:
    """Probabilities on the preprocessed grid -> label on the scan's own grid (voxssl predict's
    :func:`voxssl.eval.inference.label_in_original_geometry`) -> ``<name>_seg.nii.gz`` in
    ``output_dir``, written with the scan's qform and sform."""

    def __init__(
        self,
        keys: Hashable | Sequence[Hashable],
        output_dir: str | os.PathLike,
        classes: Sequence[int],
        kind: str,
        threshold: float = 0.5,
        interpolation: str = "linear",
    ) -> None:
        self.keys, self.output_dir = _keys(keys), Path(output_dir)
        self.classes, self.kind, self.threshold = list(classes), kind, float(threshold)
        if interpolation not in ("linear", "nearest"):
            raise ValueError(f"interpolation must be 'linear' or 'nearest', got {interpolation!r}")
        self.interpolation: Interpolation = "nearest" if interpolation == "nearest" else "linear"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:

        out = dict(data)
        source = Path(out["voxssl_geometry_source"])
        for key in self.keys:
            probs = torch.as_tensor(out[key]).detach().cpu().float()
            label, affine = label_in_original_geometry(
                probs,
                out["voxssl_meta"],
                self.classes,
                self.kind,
                self.threshold,
                self.interpolation,
            )
            self.output_dir.mkdir(parents=True, exist_ok=True)
            out[key] = write_label_nifti(
                self.output_dir / output_name(source),
                label,
                affine,
                geometry=nifti_geometry(source),
            )
        return out


class SaveEmbeddingd:
    """A voxel embedding ``(D, X, Y, Z)`` on the preprocessed grid -> ``<name>_embedding.nii.gz``
    (4D, channels last) with the preprocessed grid's affine, so it overlays the scan in world
    space."""

    def __init__(self, keys: Hashable | Sequence[Hashable], output_dir: str | os.PathLike):
        self.keys, self.output_dir = _keys(keys), Path(output_dir)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import nibabel as nib

        out = dict(data)
        source = Path(out["voxssl_geometry_source"])
        name = source.name.removesuffix(".gz").removesuffix(".nii") + "_embedding.nii.gz"
        affine = np.asarray(out["voxssl_meta"]["affine"], dtype=np.float64)
        for key in self.keys:
            embedding = torch.as_tensor(out[key]).detach().cpu().float().numpy()
            image = nib.Nifti1Image(np.moveaxis(embedding, 0, -1), affine)
            image.set_qform(affine, code=1)
            image.set_sform(affine, code=1)
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.output_dir / name, suffix=".nii.gz") as tmp:
                nib.save(image, str(tmp))
            out[key] = self.output_dir / name
        return out


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


def preprocessing_transforms(
    preprocessing: Mapping[str, Any], roi: Sequence[int] | None = None, in_channels: int = 1
) -> list[dict[str, Any]]:
    """The bundle's preprocessing: voxssl's own, as recorded in a plan (see the module docstring)."""
    modality = preprocessing.get("modality")
    spacing = preprocessing.get("spacing")
    if modality not in ("ct", "mr") or spacing is None:
        raise ConversionError(
            "the weights' plan does not record the modality and spacing they expect; re-import them with "
            "--modality (voxssl weights import) before exporting a MONAI bundle"
        )
    return [
        {
            "_target_": "voxssl.eval.monai_bundle.LoadScand",
            "keys": "image",
            "in_channels": int(in_channels),
        },
        {
            "_target_": "voxssl.eval.monai_bundle.VoxsslPreprocessd",
            "keys": "image",
            "modality": modality,
            "preprocessing": {
                "spacing": list(spacing),
                "intensity": dict(preprocessing.get("intensity", {})),
            },
            "roi_size": None if roi is None else list(roi),
        },
    ]


def inference_config(
    architecture: Mapping[str, Any],
    preprocessing: Mapping[str, Any],
    segmentation: Mapping[str, Any] | None,
    roi: Sequence[int],
) -> dict[str, Any]:
    """The ``configs/inference.json`` content (MONAI inference layout, run by :class:`BundleInference`).

    Sliding-window settings, padding, body mask and decision are ``voxssl predict``'s; edit
    ``body_mask`` or ``interpolation`` in the file to change them.
    """

    overlap = float((segmentation or {}).get("sw_overlap", 0.5))
    mode = (segmentation or {}).get("sw_mode", "gaussian")
    modality = preprocessing.get("modality")
    post: list[dict[str, Any]]
    if segmentation is not None:
        kind = segmentation["loss"]
        post = [
            {
                "_target_": "voxssl.eval.monai_bundle.RestrictToBodyd",
                "keys": "pred",
                "kind": kind,
                "enabled": "@body_mask",
            },
            {
                "_target_": "voxssl.eval.monai_bundle.SaveLabeld",
                "keys": "pred",
                "output_dir": "@output_dir",
                "classes": list(segmentation["classes"]),
                "kind": kind,
                "threshold": float(segmentation["threshold"]),
                "interpolation": "@interpolation",
            },
        ]
    else:  # embeddings stay on the preprocessed grid (their affine places them in the scanner space)
        post = [
            {
                "_target_": "voxssl.eval.monai_bundle.SaveEmbeddingd",
                "keys": "pred",
                "output_dir": "@output_dir",
            }
        ]
    body_mask = bool((segmentation or {}).get("body_restricted", False)) or modality == "ct"
    in_channels = int(architecture.get("in_channels", 1))
    return {
        "imports": [
            "$import glob",
            "$import os",
            "$import torch",
            "$import voxssl.eval.monai_bundle",
            "$import voxssl.hub.monai_bundle",
        ],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
        "body_mask": body_mask,
        "interpolation": "linear",
        "network_def": {
            "_target_": "voxssl.hub.monai_bundle.BundleNetwork",
            "architecture": dict(architecture),
            "segmentation": None if segmentation is None else dict(segmentation),
            "probabilities": segmentation is not None,
        },
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": preprocessing_transforms(
                preprocessing, roi if segmentation is not None else None, in_channels
            ),
        },
        "dataset": {
            "_target_": "Dataset",
            "data": "$[{'image': i} for i in @datalist]",
            "transform": "@preprocessing",
        },
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(roi),
            "sw_batch_size": PREDICT_SW_BATCH_SIZE,
            "overlap": overlap,
            "mode": mode,
            "padding_mode": PADDING_MODE,
        },
        "postprocessing": {"_target_": "Compose", "transforms": post},
        "inference": {
            "_target_": "voxssl.hub.monai_bundle.BundleInference",
            "dataloader": "@dataset",
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
    "LoadScand",
    "RestrictToBodyd",
    "SaveEmbeddingd",
    "SaveLabeld",
    "VoxsslPreprocessd",
    "bundle_metadata",
    "export_monai_bundle",
    "inference_config",
    "preprocessing_transforms",
]
