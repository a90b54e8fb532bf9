"""Reproduce a table of the seed papers end to end with the recipes of recipes/paper/.

Protocol
--------
``python benchmarks/reproduce.py TABLE --data ADAPTER=ROOT ... [--weights ROW=SPEC] [--work DIR]``

TABLE is one of:

* ``seed004-table1``: AMOS-MRI linear probe of backbones pretrained on NAKO (Kats et al., ISBI
  2024, Table 1): the vox2vec baseline, the three single changes (local augmentations, balanced
  architecture, reconstruction; the seed text lost which middle row is which) and all three;
* ``seed004-table2``: BTCV linear probe (Table 2): vox2vec's published weights (6550 CTs), vox2vec
  pretrained on the 2500 CTs, the hierarchical model pretrained on the 2500 CTs;
* ``seed004-table3``: AMOS-MRI fine-tuning vs training from scratch with 4, 8 and 42 images
  (Table 3), each data size on its own;
* ``dinov2-ct`` / ``dinov2-mri``: DINOv2-ALPNet Tables 2 / 1 (Abd-CT, Abd-MRI; Setting 2, 1-shot,
  C = 3), with the SSL-ALPNet (ResNet-101) baseline row.

For every row the script preprocesses (each cache once), pretrains when the row needs a backbone
(or takes ``--weights ROW=SPEC``: a voxssl file, run folder, registry name or foreign .pt), runs the
downstream protocol of the table's recipe, and prints the paper's columns beside the published
numbers (copied from the seed papers, source named in the output). The rows' recipes are read
unchanged; only data roots, cache and run folders (and, with ``--smoke``, sizes) are overridden
with ``--set``-style overrides, which the JSON records. Results: ``benchmarks/results/
reproduce_<table>.json`` (``--results`` moves it); runs under ``--work`` (default ``runs/reproduce``).

Columns: seed 004 prints Sp, Kid (mean of the two kidneys), Gb, Es, Li, St, Aor, IVC, [PVC], Pa,
AG (mean of the two adrenal glands) and Avg = mean over all organs of the recipe (12 or 13, as the
paper's Avg, which its code computes over every class), +- std over folds; DINOv2-ALPNet prints LK,
RK, Spleen, Liver and their mean.

``--smoke`` runs the same code paths on generated phantoms in a few seconds per table on a CPU: tiny
models, 1-3 steps, one of 2 folds, the phantoms' organs; a vox2vec-layout .pt file stands in for
published weights and a tiny CNN for the few-shot encoders (DINOv2-L, ResNet-101).
Its numbers are meaningless and say so; it exists so that the tests run this script.

Expected cost of the full tables: seed 004 reports ~35 h on one A100-80GB per pretraining; the
downstream and few-shot costs are not published (docs/reproduce.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "paper"
RESULTS = Path(__file__).resolve().parent / "results"
log = logging.getLogger("reproduce")

SEED004 = "Kats, Hirsch, Heinrich, ISBI 2024 (shared/seeds/004)"
DINOV2 = "Ayzenberg, Giryes, Greenspan, ISBI 2024 (shared/seeds/000, 001)"

# ------------------------------------------------------------------------------- published numbers

SEED004_COLUMNS = ["Sp", "Kid", "Gb", "Es", "Li", "St", "Aor", "IVC", "Pa", "AG", "Avg"]
SEED004_BTCV_COLUMNS = ["Sp", "Kid", "Gb", "Es", "Li", "St", "Aor", "IVC", "PVC", "Pa", "AG", "Avg"]
FEWSHOT_COLUMNS = ["LK", "RK", "Spleen", "Liver", "Mean"]


def _row(columns: list[str], values: list[float], std: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = dict(zip(columns, values, strict=True))
    if std is not None:
        row["Avg_std_over_folds"] = std
    return row


PUBLISHED: dict[str, dict[str, Any]] = {
    "seed004-table1": {
        "source": f"{SEED004}, Table 1 (rows in the paper's order; the check marks of the middle "
        "rows are lost in the seed text)",
        "rows": {
            "row 1: vox2vec baseline": _row(
                SEED004_COLUMNS,
                [76.9, 79.3, 33.2, 35.1, 87.8, 51.1, 73.0, 62.0, 55.3, 36.4, 58.8],
                3.5,
            ),
            "row 2 (combination unknown)": _row(
                SEED004_COLUMNS,
                [78.9, 82.7, 38.9, 40.8, 89.1, 50.9, 77.9, 64.6, 59.1, 39.7, 62.1],
                2.4,
            ),
            "row 3 (combination unknown)": _row(
                SEED004_COLUMNS,
                [57.3, 62.3, 30.7, 25.6, 80.0, 33.6, 59.2, 44.9, 36.1, 20.5, 44.4],
                4.3,
            ),
            "row 4 (combination unknown)": _row(
                SEED004_COLUMNS,
                [79.7, 82.7, 40.0, 41.2, 90.2, 56.6, 78.4, 63.0, 62.8, 39.0, 62.9],
                2.6,
            ),
            "row 5: all three changes": _row(
                SEED004_COLUMNS,
                [83.2, 84.9, 44.9, 47.4, 90.3, 56.1, 80.6, 69.2, 62.0, 42.5, 65.7],
                2.6,
            ),
        },
    },
    "seed004-table2": {
        "source": f"{SEED004}, Table 2",
        "rows": {
            "vox2vec (6550)": _row(
                SEED004_BTCV_COLUMNS,
                [80.9, 81.0, 30.6, 58.3, 90.4, 62.3, 83.3, 74.0, 52.8, 48.1, 47.2, 64.4],
                1.3,
            ),
            "vox2vec (2500)": _row(
                SEED004_BTCV_COLUMNS,
                [79.3, 79.0, 24.2, 53.4, 88.6, 57.9, 82.6, 72.7, 50.5, 46.8, 46.0, 62.0],
                1.0,
            ),
            "ours (2500)": _row(
                SEED004_BTCV_COLUMNS,
                [81.4, 83.1, 32.5, 58.4, 89.5, 59.5, 83.6, 75.6, 54.8, 54.5, 48.4, 65.6],
                0.8,
            ),
        },
    },
    "seed004-table3": {
        "source": f"{SEED004}, Table 3",
        "rows": {
            "from scratch, 42": _row(
                SEED004_COLUMNS,
                [89.3, 90.7, 59.6, 61.0, 93.7, 81.1, 89.5, 84.4, 76.9, 54.4, 77.1],
                5.4,
            ),
            "fine-tuning, 42": _row(
                SEED004_COLUMNS,
                [90.8, 91.7, 67.0, 62.3, 94.5, 81.9, 89.6, 84.9, 79.1, 56.2, 78.8],
                4.3,
            ),
            "from scratch, 8": _row(
                SEED004_COLUMNS,
                [81.3, 80.6, 34.5, 47.0, 90.7, 65.7, 80.8, 69.3, 57.5, 35.6, 63.3],
                6.7,
            ),
            "fine-tuning, 8": _row(
                SEED004_COLUMNS,
                [86.8, 85.6, 50.8, 46.0, 93.0, 66.9, 84.6, 76.7, 67.8, 44.3, 69.3],
                4.7,
            ),
            "from scratch, 4": _row(
                SEED004_COLUMNS,
                [66.2, 67.7, 18.7, 35.0, 85.1, 40.7, 72.1, 54.9, 39.2, 16.6, 48.4],
                10.1,
            ),
            "fine-tuning, 4": _row(
                SEED004_COLUMNS,
                [81.2, 78.6, 20.8, 41.0, 90.9, 52.7, 78.3, 63.6, 51.1, 27.5, 57.7],
                7.8,
            ),
        },
    },
    "dinov2-ct": {
        "source": f"{DINOV2}, Table 2 (Abd-CT, Setting 2); the SSL-ALPNet row is Ouyang et al., "
        "ECCV 2020, as copied there",
        "rows": {
            "SSL-ALPNet": _row(FEWSHOT_COLUMNS, [63.34, 54.82, 60.25, 73.65, 63.02]),
            "SSL-DINOv2 large": _row(FEWSHOT_COLUMNS, [69.96, 66.4, 73, 76.40, 71.44]),
            "SSL-DINOv2 large + CCA": _row(FEWSHOT_COLUMNS, [66.4, 69.96, 74.60, 81.67, 73.16]),
            "SSL-DINOv2 slice adapter": _row(FEWSHOT_COLUMNS, [70.63, 66.98, 73.22, 77.75, 72.14]),
            "SSL-DINOv2 slice adapter + CCA": _row(
                FEWSHOT_COLUMNS, [73, 65.98, 74.71, 78.6, 73.07]
            ),
            "SSL-DINOv2 TTT + CCA": _row(FEWSHOT_COLUMNS, [65.65, 73.05, 74.76, 81.41, 73.72]),
        },
    },
    "dinov2-mri": {
        "source": f"{DINOV2}, Table 1 (Abd-MRI, Setting 2); the SSL-ALPNet row is Ouyang et al., "
        "ECCV 2020, as copied there",
        "rows": {
            "SSL-ALPNet": _row(FEWSHOT_COLUMNS, [73.63, 78.39, 67.02, 73.05, 73.02]),
            "SSL-DINOv2 large": _row(FEWSHOT_COLUMNS, [75.06, 80.21, 71.86, 73.5, 75.16]),
            "SSL-DINOv2 large + CCA": _row(FEWSHOT_COLUMNS, [81.43, 84.80, 73.30, 74.20, 78.43]),
            "SSL-DINOv2 slice adapter": _row(FEWSHOT_COLUMNS, [75.40, 79.10, 72.09, 72.63, 74.80]),
            "SSL-DINOv2 slice adapter + CCA": _row(
                FEWSHOT_COLUMNS, [80.81, 81.19, 73.32, 72.92, 77.06]
            ),
            "SSL-DINOv2 TTT + CCA": _row(FEWSHOT_COLUMNS, [80.37, 82.29, 73.4, 74.72, 77.39]),
        },
    },
}

# ---------------------------------------------------------------------------------------- tables


@dataclass
class Row:
    """One row: optional pretraining (recipe + overrides), then the table's downstream run."""

    name: str
    published: str | None  # key in PUBLISHED[table]["rows"], None when the paper has no such row
    pretrain: str | None = None  # recipe in recipes/paper/
    pretrain_set: list[str] = field(default_factory=list)
    weights: str | None = None  # a fixed --weights spec (registry name ...) instead of pretraining
    downstream_set: list[str] = field(default_factory=list)
    from_scratch: bool = False
    subsets: dict[str, str] = field(default_factory=dict)  # n_train -> published row (Table 3)
    fewshot_train: str | None = None  # few-shot: the name of the trained model set it evaluates
    recipe: str | None = None  # few-shot: this row's recipe instead of the table's


@dataclass
class Table:
    name: str
    kind: str  # linear-probe | fine-tune | few-shot
    recipe: str  # the downstream / few-shot recipe
    columns: list[str]
    rows: list[Row]
    modality: str = "ct"


VOX2VEC_TO_AUG = ["pretrain.local.enabled=true"]
HIER_TO_ARCH_ONLY = ["pretrain.local.enabled=false", "pretrain.reconstruction_weight=0.0"]
HIER_ARCH_ONLY_MODEL = ["model.reconstruction=none"]
VOX2VEC_TO_REC = ["model.reconstruction=two_conv", "pretrain.reconstruction_weight=10.0"]

TABLES: dict[str, Table] = {
    "seed004-table1": Table(
        "seed004-table1",
        "linear-probe",
        "seed004_table1_amos_mri_linear_probe.yaml",
        SEED004_COLUMNS,
        [
            Row("vox2vec baseline", "row 1: vox2vec baseline", "seed004_mri_pretrain_vox2vec.yaml"),
            Row("+ local augmentations", None, "seed004_mri_pretrain_vox2vec.yaml", VOX2VEC_TO_AUG),
            Row(
                "+ balanced architecture",
                None,
                "seed004_mri_pretrain_hierarchical.yaml",
                HIER_TO_ARCH_ONLY + HIER_ARCH_ONLY_MODEL,
            ),
            Row("+ reconstruction", None, "seed004_mri_pretrain_vox2vec.yaml", VOX2VEC_TO_REC),
            Row("all three", "row 5: all three changes", "seed004_mri_pretrain_hierarchical.yaml"),
        ],
        modality="mr",
    ),
    "seed004-table2": Table(
        "seed004-table2",
        "linear-probe",
        "seed004_table2_btcv_linear_probe.yaml",
        SEED004_BTCV_COLUMNS,
        [
            Row("vox2vec (6550)", "vox2vec (6550)", weights="vox2vec-contrastive"),
            Row("vox2vec (2500)", "vox2vec (2500)", "seed004_ct_pretrain_vox2vec.yaml"),
            Row("ours (2500)", "ours (2500)", "seed004_ct_pretrain_hierarchical.yaml"),
        ],
    ),
    "seed004-table3": Table(
        "seed004-table3",
        "fine-tune",
        "seed004_table3_amos_mri_finetune.yaml",
        SEED004_COLUMNS,
        [
            Row(
                "fine-tuning",
                None,
                "seed004_mri_pretrain_hierarchical.yaml",
                subsets={"4": "fine-tuning, 4", "8": "fine-tuning, 8", "all": "fine-tuning, 42"},
            ),
            Row(
                "from scratch",
                None,
                "seed004_mri_pretrain_hierarchical.yaml",
                from_scratch=True,
                subsets={"4": "from scratch, 4", "8": "from scratch, 8", "all": "from scratch, 42"},
            ),
        ],
        modality="mr",
    ),
}


def _fewshot_table(name: str, suffix: str, modality: str) -> Table:
    dinov2 = f"dinov2_alpnet_abd_{suffix}.yaml"
    ssl = f"ssl_alpnet_abd_{suffix}.yaml"
    adapter = ["fewshot.encoder.input_mode=adapter"]
    return Table(
        name,
        "few-shot",
        dinov2,
        FEWSHOT_COLUMNS,
        [
            Row("SSL-ALPNet", "SSL-ALPNet", recipe=ssl, fewshot_train="ssl-alpnet"),
            Row(
                "SSL-DINOv2 large",
                "SSL-DINOv2 large",
                downstream_set=["fewshot.eval.cca=none"],
                fewshot_train="dinov2",
            ),
            Row("SSL-DINOv2 large + CCA", "SSL-DINOv2 large + CCA", fewshot_train="dinov2"),
            Row(
                "SSL-DINOv2 slice adapter",
                "SSL-DINOv2 slice adapter",
                downstream_set=[*adapter, "fewshot.eval.cca=none"],
                fewshot_train="dinov2-adapter",
            ),
            Row(
                "SSL-DINOv2 slice adapter + CCA",
                "SSL-DINOv2 slice adapter + CCA",
                downstream_set=adapter,
                fewshot_train="dinov2-adapter",
            ),
            Row(
                "SSL-DINOv2 TTT + CCA",
                "SSL-DINOv2 TTT + CCA",
                downstream_set=["fewshot.eval.ttt.enabled=true"],
                fewshot_train="dinov2",
            ),
        ],
        modality=modality,
    )


TABLES["dinov2-ct"] = _fewshot_table("dinov2-ct", "ct", "ct")
TABLES["dinov2-mri"] = _fewshot_table("dinov2-mri", "mri", "mr")

# --------------------------------------------------------------------------------- smoke settings

SMOKE_ORGANS = ["spleen", "right_kidney", "left_kidney", "liver"]
SMOKE_PHANTOMS = 4
SMOKE_SHAPE = (48, 40, 16)


def smoke_data(root: Path, modality: str) -> list[str]:
    source = (
        "{adapter: folder, name: phantoms, root: '" + str(root) + "', modality: " + modality + ", "
        "options: {images: images, labels: labels}}"
    )
    return [f"data.sources=[{source}]", "data.num_workers=1"]


SMOKE_PREPROCESS = {  # about the phantoms' own grid (8.3 x 8.3 x 15 mm): ~50 x 40 x 16 voxels
    "ct": ["preprocess.ct.spacing=[8.0,8.0,15.0]"],
    "mr": ["preprocess.mr.spacing=[8.0,8.0,15.0]", "preprocess.mr.crop_threshold=0.05"],
}
SMOKE_PRETRAIN = [
    "model.base_channels=2",
    "model.projection_channels=4",
    "model.projector_out=8",
    "pretrain.steps=2",
    "pretrain.pairs_per_step=2",
    "pretrain.pairs_per_volume=2",
    "pretrain.patch_size=[16,16,8]",
    "pretrain.positives_per_pair=16",
    "pretrain.num_workers=0",
    "pretrain.checkpoint_every=2",
    "pretrain.log_every=1",
    "pretrain.image_every=100",
    "pretrain.local.shuffle_blocks=50",
]
SMOKE_DOWNSTREAM = [
    f"{{section}}.classes={SMOKE_ORGANS}",
    "{section}.source=phantoms",
    "{section}.steps=2",
    "{section}.batch_size=1",
    "{section}.patch_size=[16,16,8]",
    "{section}.sw_batch_size=1",
    "{section}.sw_roi_size=[64,48,16]",  # a whole preprocessed phantom: one window per case
    "{section}.tensorboard=false",
    "{section}.write_predictions=false",
    "{section}.overlay_slices=0",
    "{section}.log_every=1",
    "{section}.val_every=0",
    "{section}.cv.scheme=kfold",
    "{section}.cv.k=2",
    "{section}.cv.val_fraction=0.0",
    "{section}.cv.folds=[0]",  # one of the two folds
]
SMOKE_PROBE = ["probe.feature_cache=false"]
SMOKE_FINETUNE = [
    "finetune.batch_size=2",  # BatchNorm of a trained backbone needs 2 values at the 1-voxel level
    "finetune.frozen_steps=1",
    "finetune.ramp_steps=1",
    "finetune.cv.n_train=[1,all]",
]
SMOKE_FEWSHOT = [
    "fewshot.source=phantoms",
    "fewshot.image_size=28",
    "fewshot.eval_image_size=28",
    "fewshot.alp.feature_grid=8",
    "fewshot.alp.eval_feature_grid=8",
    "fewshot.alp.train_window=[2,2]",
    "fewshot.alp.eval_window=[1,1]",
    "fewshot.superpixels.min_size=20",
    "fewshot.superpixels.num_workers=1",
    "fewshot.optim.steps=2",
    "fewshot.optim.log_every=1",
    "fewshot.optim.checkpoint_every=100",
    "fewshot.eval.folds=2",
    "fewshot.eval.split_file=null",
    "fewshot.eval.write_predictions=false",
    "fewshot.eval.ttt.steps=1",
    "fewshot.device=cpu",
    "fewshot.cpu_threads=1",
]
SMOKE_FOLDS = [0]  # few-shot: one of the two folds

#: smoke: a tiny CNN stands in for DINOv2-L and for the ResNet-101 (both are tested on their own in
#: tests/fewshot; building and running them on CPU would cost minutes per table)
SMOKE_ENCODER = [
    "fewshot.encoder.type=cnn",
    "fewshot.encoder.cnn_channels=[8,8,8]",
    "fewshot.encoder.lora.enabled=false",
    "fewshot.encoder.pretrained=false",
]

# ------------------------------------------------------------------------------------- execution


@dataclass
class Runner:
    table: Table
    work: Path
    data: dict[str, str]
    weights: dict[str, str]
    smoke: bool
    device: str
    progress: bool
    done_preprocess: set[str] = field(default_factory=set)
    pretrained: dict[str, str] = field(default_factory=dict)
    overrides_used: dict[str, list[str]] = field(default_factory=dict)
    phantoms: dict[str, Path] = field(default_factory=dict)

    # -- recipes
    def recipe(self, name: str, extra: list[str], tag: str):
        from voxssl.config.loader import read_yaml
        from voxssl.config.recipe import load_recipe

        path = RECIPES / name
        raw = read_yaml(path)
        overrides = [f"output_dir={self.work / 'runs'}", f"name={tag}"]
        modality = "mr" if "mr" in raw.get("preprocess", {}) else "ct"
        if self.smoke:
            overrides += smoke_data(self.phantom_root(modality), modality)
            overrides += SMOKE_PREPROCESS[modality]
            overrides.append(f"data.cache_dir={self.smoke_cache(raw, modality)}")
        else:
            overrides.append(
                f"data.cache_dir={self.work / 'cache' / Path(raw['data']['cache_dir']).name}"
            )
            for index, source in enumerate(raw["data"]["sources"]):
                root = self.data.get(source["adapter"])
                if root is None:
                    raise SystemExit(
                        f"{path.name}: data source {index} is a {source['adapter']} folder; give it with "
                        f"--data {source['adapter']}=/path/to/it"
                    )
                overrides.append(f"data.sources.{index}.root={root}")
        if self.smoke:
            overrides += self.smoke_sections(raw)
        if not self.smoke:
            for section in ("pretrain", "probe", "finetune", "fewshot"):
                if section in raw:
                    overrides.append(f"{section}.device={self.device}")
        overrides += extra
        self.overrides_used[tag] = overrides
        return load_recipe(path, overrides)

    def smoke_cache(self, raw: dict, modality: str) -> Path:
        """One phantom cache per preprocessing setting (recipes that agree share it)."""
        import hashlib

        settings = json.dumps(raw.get("preprocess", {}).get(modality, {}), sort_keys=True)
        digest = hashlib.sha256(settings.encode()).hexdigest()[:8]
        return self.work / "cache" / f"phantoms_{modality}_{digest}"

    def smoke_sections(self, raw: dict) -> list[str]:
        out: list[str] = []
        if "pretrain" in raw:
            out += SMOKE_PRETRAIN
        for section in ("probe", "finetune"):
            if section in raw:
                out += [o.format(section=section) for o in SMOKE_DOWNSTREAM]
        if "probe" in raw:
            out += SMOKE_PROBE
        if "finetune" in raw:
            out += SMOKE_FINETUNE
        if "fewshot" in raw:
            out += SMOKE_FEWSHOT + SMOKE_ENCODER
        return out

    def phantom_root(self, modality: str) -> Path:
        if modality not in self.phantoms:
            from voxssl.data.phantoms import write_phantom_dataset

            root = self.work / f"phantoms_{modality}"
            if not (root / "images").is_dir():
                write_phantom_dataset(
                    root,
                    SMOKE_PHANTOMS,
                    modality=modality,
                    seed=0,
                    shape=SMOKE_SHAPE,
                    progress=False,
                )
            self.phantoms[modality] = root
        return self.phantoms[modality]

    def preprocess(self, recipe) -> None:
        from voxssl.data.pipeline import run_preprocess

        key = str(recipe.data.cache_dir)
        if key in self.done_preprocess:
            return
        summary = run_preprocess(recipe, progress=self.progress)
        if not summary.ok:
            raise SystemExit(summary.describe())
        self.done_preprocess.add(key)

    # -- backbones
    def backbone(self, row: Row) -> str:
        if row.weights is not None:
            spec = self.weights.get(row.name, row.weights)
            if self.smoke:
                spec = str(self.smoke_foreign_weights())
            return spec
        if row.name in self.weights:
            return self.weights[row.name]
        key = f"{row.pretrain}|{' '.join(row.pretrain_set)}"
        if key not in self.pretrained:
            from voxssl.checkpoint_layout import latest_checkpoint
            from voxssl.train.loop import BACKBONE_FILE, pretrain

            tag = f"{self.table.name}-pretrain-{_slug(row.name)}"
            recipe = self.recipe(row.pretrain, row.pretrain_set, tag)
            done = recipe.run_dir / BACKBONE_FILE
            if done.is_file():  # a finished run of an earlier invocation
                log.info("%s: reusing %s", row.name, done)
                self.pretrained[key] = str(done)
                return str(done)
            self.preprocess(recipe)
            log.info("pretraining %s (%s)", row.name, row.pretrain)
            resume = latest_checkpoint(recipe.run_dir) is not None
            result = pretrain(recipe, resume=resume, progress=self.progress)
            if result.backbone_path is None:
                raise SystemExit(f"{tag}: pretraining stopped before its last step")
            self.pretrained[key] = str(result.backbone_path)
        return self.pretrained[key]

    def smoke_foreign_weights(self) -> Path:
        """A vox2vec-layout .pt (what mishgon/vox2vec publishes) of a tiny random FPN."""
        import torch

        from voxssl.models.fpn import FPN

        path = self.work / "vox2vec_layout_smoke.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():
            torch.manual_seed(0)
            torch.save(FPN(1, 2, 6).state_dict(), path)
        return path

    # -- rows
    def run_downstream_row(self, row: Row) -> dict[str, Any]:
        from voxssl.config.recipe import require_section
        from voxssl.eval.protocol import run_downstream

        weights = self.backbone(row)
        section = "probe" if self.table.kind == "linear-probe" else "finetune"
        extra = list(row.downstream_set)
        if row.from_scratch:
            extra.append("finetune.from_scratch=true")
        recipe = self.recipe(self.table.recipe, extra, f"{self.table.name}-{_slug(row.name)}")
        self.preprocess(recipe)
        cfg = require_section(recipe, section, self.table.kind)
        summary = run_downstream(recipe, cfg, weights, self.table.kind, progress=self.progress)
        return {
            "weights": weights,
            "run_dir": str(recipe.run_dir),
            "subsets": {
                label: seed004_columns(sub, self.table.columns)
                for label, sub in summary["subsets"].items()
            },
        }

    def run_fewshot_row(self, row: Row, trained: dict[str, Path]) -> dict[str, Any]:
        from voxssl.config.recipe import require_section
        from voxssl.fewshot.evaluate import evaluate_protocol
        from voxssl.fewshot.experiment import train_protocol

        recipe_name = row.recipe or self.table.recipe
        train_set = [s for s in row.downstream_set if s.startswith("fewshot.encoder.")]
        encoder_weights = self.weights.get(row.fewshot_train) or self.weights.get(row.name)
        if encoder_weights and not self.smoke:  # DINOv2 folder / ResNet-101 checkpoint on disk
            train_set.append(f"fewshot.encoder.weights={encoder_weights}")
        tag = f"{self.table.name}-{row.fewshot_train}"
        recipe = self.recipe(recipe_name, [*row.downstream_set, *train_set], tag)
        self.preprocess(recipe)
        config = require_section(recipe, "fewshot", "few-shot")
        if row.fewshot_train not in trained:
            train_recipe = self.recipe(recipe_name, train_set, tag)
            models = train_recipe.run_dir / "models"
            train_protocol(
                train_recipe.data.cache_dir,
                train_recipe.fewshot,
                models,
                folds=SMOKE_FOLDS if self.smoke else None,
                preprocess=None,
            )
            trained[row.fewshot_train] = models
        out = recipe.run_dir / f"eval-{_slug(row.name)}"
        results = evaluate_protocol(
            recipe.data.cache_dir,
            config,
            trained[row.fewshot_train],
            out,
            folds=SMOKE_FOLDS if self.smoke else None,
        )
        organs = results.per_organ()
        values = {
            "LK": organs.get("left_kidney"),
            "RK": organs.get("right_kidney"),
            "Spleen": organs.get("spleen"),
            "Liver": organs.get("liver"),
        }
        found = [v for v in values.values() if v is not None]
        values["Mean"] = float(np.mean(found)) if found else None
        return {
            "run_dir": str(out),
            "subsets": {"all": {k: _pct(v) for k, v in values.items()}},
        }


def seed004_columns(summary: dict, columns: list[str]) -> dict[str, Any]:
    """The paper's columns from a downstream summary: Dice % over folds; Kid and AG are the means
    of the left/right organs; Avg is the mean over every organ, +- std of the per-fold means."""
    organs = {name: entry["dice_over_folds"]["mean"] for name, entry in summary["organs"].items()}

    def mean_of(*names: str):
        values = [organs[n] for n in names if n in organs and _finite(organs[n])]
        return float(np.mean(values)) if values else None

    mapping = {
        "Sp": ("spleen",),
        "Kid": ("right_kidney", "left_kidney"),
        "Gb": ("gallbladder",),
        "Es": ("esophagus",),
        "Li": ("liver",),
        "St": ("stomach",),
        "Aor": ("aorta",),
        "IVC": ("inferior_vena_cava",),
        "PVC": ("portal_splenic_vein",),
        "Pa": ("pancreas",),
        "AG": ("right_adrenal_gland", "left_adrenal_gland"),
    }
    out: dict[str, Any] = {}
    for column in columns:
        if column == "Avg":
            avg = summary["mean_dice"]["over_folds"]
            out["Avg"] = _pct(avg["mean"])
            out["Avg_std_over_folds"] = _pct(avg["std"])
        else:
            out[column] = _pct(mean_of(*mapping[column]))
    return out


def _finite(value) -> bool:
    return value is not None and isinstance(value, float | int) and math.isfinite(value)


def _pct(value) -> float | None:
    return round(100.0 * float(value), 2) if _finite(value) else None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def run_table(
    name: str,
    work: Path,
    data: dict[str, str],
    weights: dict[str, str],
    smoke: bool,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    import os

    table = TABLES[name]
    if smoke:  # never touch the user's weights cache with the smoke run's stand-in weights
        os.environ["VOXSSL_HOME"] = str(Path(work) / "voxssl_home")
    runner = Runner(table, Path(work), data, weights, smoke, device, progress)
    started = time.perf_counter()
    rows = []
    trained: dict[str, Path] = {}
    for row in table.rows:
        log.info("%s: %s", name, row.name)
        if table.kind == "few-shot":
            result = runner.run_fewshot_row(row, trained)
        else:
            result = runner.run_downstream_row(row)
        rows.append(
            {
                "row": row.name,
                "published_row": row.published,
                "subsets_published": row.subsets,
                **result,
            }
        )
    return {
        "table": name,
        "kind": table.kind,
        "recipe": f"recipes/paper/{table.recipe}",
        "smoke": smoke,
        "note": (
            "smoke run on generated phantoms with tiny models: the numbers test the script, "
            "they do not estimate the paper's"
            if smoke
            else "full run"
        ),
        "columns": table.columns,
        "rows": rows,
        "published": PUBLISHED[name],
        "overrides": runner.overrides_used,
        "seconds": round(time.perf_counter() - started, 1),
    }


def format_table(result: dict[str, Any]) -> str:
    """Markdown: each row's columns 'ours / paper'."""
    columns = result["columns"]
    published = result["published"]["rows"]
    lines = [
        f"## {result['table']} ({'SMOKE: phantoms, tiny models' if result['smoke'] else 'full run'})",
        "",
        f"Published numbers: {result['published']['source']}. Cells: ours / paper, Dice %.",
        "",
        "| row | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for row in result["rows"]:
        for label, ours in row["subsets"].items():
            paper_key = (
                row["subsets_published"].get(label, row["published_row"])
                if row["subsets_published"]
                else row["published_row"]
            )
            paper = published.get(paper_key, {}) if paper_key else {}
            title = row["row"] if len(row["subsets"]) == 1 else f"{row['row']}, n_train {label}"
            cells = [f"{_cell(ours.get(c))} / {_cell(paper.get(c))}" for c in columns]
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
    unmatched = [k for k in published if k not in {r["published_row"] for r in result["rows"]}]
    unmatched = [
        k
        for k in unmatched
        if not any(k in r["subsets_published"].values() for r in result["rows"])
    ]
    for key in unmatched:
        cells = [f"- / {_cell(published[key].get(c))}" for c in columns]
        lines.append(f"| (paper) {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{what} expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", choices=[*TABLES, "all"])
    parser.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="ADAPTER=ROOT",
        help="data root of an adapter of the recipes (btcv, amos, flare, nako, chaos)",
    )
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="ROW=SPEC",
        help="seed 004: a backbone for a row instead of pretraining it (ROW as printed); few-shot: "
        "the encoder weights of a model set (dinov2, dinov2-adapter or ssl-alpnet) or a row",
    )
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "reproduce")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the JSON results")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--smoke", action="store_true", help="phantoms, tiny models, a few steps")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    data = parse_pairs(args.data, "--data")
    weights = parse_pairs(args.weights, "--weights")
    names = list(TABLES) if args.table == "all" else [args.table]
    for name in names:
        result = run_table(
            name, args.work, data, weights, args.smoke, args.device, progress=not args.quiet
        )
        text = format_table(result)
        print(text)
        args.results.mkdir(parents=True, exist_ok=True)
        suffix = "_smoke" if args.smoke else ""
        target = args.results / f"reproduce_{name.replace('-', '_')}{suffix}.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        tmp.replace(target)
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
