"""The voxel embedding used directly: landmark matching, one-shot segmentation, explore latency.

One run, two backbones of the same architecture (recipes/demo.yaml's model: no pretrained CT
weights ship with voxssl): **pretrained** (recipes/demo.yaml's self-supervised pretraining, seed 0,
on ``--pretrain-cases`` unlabelled CT phantoms and, with the default ``--pretraining
demo-support-ct``, the image of the real support ts_ct.nii.gz - the one real CT a one-shot user
owns; its label and the queries are never used in pretraining; ``PRETRAININGS`` lists the other
choices, picked by benchmarks/embedding_dev_signals.py, which reads no query) and **random init**
(same plan, seed 0).
Everything below runs the library code of ``voxssl embed``, ``voxssl one-shot`` and
``voxssl explore``.

1. Landmark matching (SAM-style correspondence) on ``--heldout`` other CT phantoms (seed 1, never
   seen in pretraining): every phantom is embedded at stride 1; for every ordered pair (i, j) and
   every landmark of phantom i (``voxssl.data.phantoms.landmarks``: organ centroids, vertebral-body
   centres, pancreas knots and renal hila), the voxel at the landmark in i is matched to the voxel
   of j with the highest cosine similarity (body voxels only), and the error is the distance in mm
   from that voxel's centre to the same landmark in j (vertebrae: to the nearest vertebral-body
   centre of j, since phantom vertebrae carry no level identity). Also: the same with the
   embedding reduced to 32 PCA dimensions (what ``voxssl explore`` uses by default), and an
   alignment-free reference, the landmark's relative position in i's body bounding box carried
   to j's.
2. One-shot segmentation on phantoms: support = held-out phantom 0 and its label, queries = the
   other held-out phantoms; organs spleen, kidneys, gallbladder, liver, stomach, aorta, IVC,
   pancreas; ``voxssl one-shot`` defaults (prototypes + neighbours, 3D CCA, stride auto). Dice
   per organ, mean over queries.
3. One-shot on the shared real scans (../shared/data/real, skipped when absent): support
   ts_ct.nii.gz + its TotalSegmentator-derived BTCV label; queries the 20-slice DICOM CT series
   (reference dicom_ct_label_btcv_RAS.nii.gz) and, CT -> MR, ts_mr.nii.gz (as MR: its default
   percentile normalisation, reference ts_mr_label_btcv.nii.gz). Organs: the ids present in both
   the support and the reference. For CT -> CT also each method alone (prototypes, neighbours)
   and every organ's median HU in the support and in the query (the two scans are not in the
   same contrast phase).
4. Click latency of ``voxssl explore`` on a 512x512x150 CT phantom pair (0.8 x 0.8 x 2.5 mm):
   embedding at stride auto with the pretrained demo model, the server's answer time (similarity
   maps of both scans + best match + display range), and, with ``--browser``, click-to-overlay
   in headless chromium (software WebGL, on this machine). Plus the server time for a
   103x103x75 grid of 160-d vectors (random values: the time depends on the size only), with and
   without PCA: 0.8 M vectors of recipes/ct.yaml's hierarchical embedding, more than its
   1 x 1 x 2 mm model gives on that CT at stride 4 (at most 103x103x47 = 0.5 M).

The gate: the pretrained embedding must beat random init on the phantom landmark error (lower)
and on the one-shot Dice on phantoms, on the real CT and CT -> MR (higher); otherwise exit 1.

    .venv/bin/python benchmarks/embedding.py --browser   # ~13 min on 2 cores, ~5 of them pretraining
                                                         # (pretraining took 33 min when the cores were
                                                         # shared by several jobs; --work DIR keeps it)
    .venv/bin/python benchmarks/embedding.py --latency-from benchmarks/results/embedding.json
                                                         # reuse the latency part of an earlier run
    .venv/bin/python benchmarks/embedding.py --backbone runs/x/backbone.safetensors   # skip pretraining
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from itertools import permutations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("VOXSSL_REAL_DATA", REPO.parent / "shared" / "data" / "real"))
RESULTS = REPO / "benchmarks" / "results" / "embedding.json"
README = REPO / "benchmarks" / "README.md"
SECTION = "embedding"
PHANTOM_ORGANS = [1, 2, 3, 4, 6, 7, 8, 9, 11]
ARMS = ("pretrained", "random_init")

#: The pretrainings this benchmark can run (``--pretraining``): recipe overrides on top of
#: recipes/demo.yaml and whether the image of the real support CT (ts_ct.nii.gz: the one real CT a
#: user of one-shot owns; never a query) is added to the unlabelled phantoms as a second source.
#: The three ``demo-support-ct*`` ones were compared on development signals that read no query
#: (benchmarks/README.md, the reading below section "embedding"); the default is the one those
#: signals chose.
_BEZIER = [
    "pretrain.local.enabled=true",
    "pretrain.local.shuffle_prob=0.0",
    "pretrain.local.inpaint_prob=0.0",
]
PRETRAININGS: dict[str, dict] = {
    "demo": {
        "text": "recipes/demo.yaml as it is (no image augmentation)",
        "overrides": [],
        "support_ct": False,
    },
    "demo-support-ct": {
        "text": "recipes/demo.yaml as it is (no image augmentation)",
        "overrides": [],
        "support_ct": True,
    },
    "demo-support-ct-bezier": {
        "text": "recipes/demo.yaml + a Models Genesis Bezier intensity curve per view (p 0.9, "
        "never inverted; no shuffling or in-painting)",
        "overrides": _BEZIER,
        "support_ct": True,
    },
    "demo-support-ct-bezier-inverted": {
        "text": "recipes/demo.yaml + a Models Genesis Bezier intensity curve per view (p 0.9, "
        "inverted half of the time; no shuffling or in-painting)",
        "overrides": [*_BEZIER, "pretrain.local.nonlinear_invert_prob=0.5"],
        "support_ct": True,
    },
}
DEFAULT_PRETRAINING = "demo-support-ct"


def write_phantoms(
    folder: Path, n: int, seed: int, prefix: str, shape=None, spacing=None
) -> list[Path]:
    """CT phantoms ``<prefix>_NNN`` with labels and landmarks (orientation drawn per case)."""
    from voxssl.data.phantoms import ORIENTATIONS, case_seeds, generate_phantom, write_phantom

    images = []
    for index in range(n):
        phantom_seed, orientation_draw = case_seeds(seed, index)
        name = f"{prefix}_{index:03d}"
        write_phantom(
            generate_phantom(phantom_seed, "ct", shape, spacing),
            folder / "images" / f"{name}.nii.gz",
            folder / "labels" / f"{name}.nii.gz",
            orientation=ORIENTATIONS[orientation_draw % len(ORIENTATIONS)],
            landmarks_path=folder / "landmarks" / f"{name}.json",
        )
        images.append(folder / "images" / f"{name}.nii.gz")
    return images


def pretrain_demo(
    work: Path,
    cases: int,
    steps: int,
    seed: int = 0,
    overrides: list[str] | None = None,
    support_ct: Path | None = None,
) -> tuple[Path, float]:
    """recipes/demo.yaml's pretraining on ``cases`` unlabelled CT phantoms (plus the image of
    ``support_ct``, when given, as a second source) with the recipe ``overrides``
    (``key.path=value``); (backbone, seconds)."""
    from demo_recipes import folder_source, recipe_over_folders

    from voxssl.config.loader import apply_overrides
    from voxssl.config.recipe import recipe_from_dict
    from voxssl.data.pipeline import run_preprocess
    from voxssl.train.loop import pretrain

    write_phantoms(work / "pretrain", cases, seed=0, prefix="pretrain")
    sources = [folder_source("pretrain", work / "pretrain", labels=False)]
    if support_ct is not None:  # its image only: a folder holding one link to it
        folder = work / "support_ct" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        link = folder / support_ct.name
        if not link.exists():
            link.symlink_to(support_ct.resolve())
        sources.append(folder_source("support_ct", work / "support_ct", labels=False))
    settings = recipe_over_folders(
        "demo.yaml", work, sources, 1, name="embedding-benchmark", seed=seed
    )
    if steps:
        settings["pretrain"]["steps"] = steps
    settings = apply_overrides(settings, list(overrides or []))
    recipe = recipe_from_dict(settings, "recipes/demo.yaml (embedding benchmark)")
    record = work / "pretrain_seconds.json"  # a re-run with the same --work reuses the backbone
    backbone = recipe.run_dir / "backbone.safetensors"
    made_with = {"overrides": list(overrides or []), "support_ct": support_ct is not None}
    if record.is_file() and backbone.is_file():
        earlier = json.loads(record.read_text())
        if earlier.get("made_with", {"overrides": [], "support_ct": False}) != made_with:
            raise SystemExit(
                f"{work}: holds a backbone pretrained with {earlier.get('made_with')}, not "
                f"{made_with}; give another --work"
            )
        return backbone, earlier["seconds"]
    if not run_preprocess(recipe, progress=False).ok:
        raise SystemExit("preprocessing the pretraining data failed")
    started = time.perf_counter()
    trained = pretrain(recipe, progress=True)
    if trained.backbone_path is None:
        raise SystemExit("pretraining did not write a backbone")
    seconds = time.perf_counter() - started
    record.write_text(json.dumps({"seconds": seconds, "made_with": made_with}))
    return trained.backbone_path, seconds


def random_like(weights: Path, out: Path, seed: int = 0) -> Path:
    """The same architecture and plan, randomly initialised (the baseline)."""
    import torch

    from voxssl.models.build import build_backbone
    from voxssl.models.plan import Plan
    from voxssl.models.weights import read_plan, save_weights

    plan = read_plan(weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(plan.model_config(source=str(weights)))
    random_plan = Plan(
        architecture=plan.architecture,
        preprocessing=plan.preprocessing,
        kind="backbone",
        extra={"note": f"random init (seed {seed}) of the architecture of {weights.name}"},
    )
    return save_weights(out, backbone.state_dict(), random_plan)


def body_box_world(label_path: Path) -> tuple[np.ndarray, np.ndarray]:
    from voxssl.data.readers import read_volume

    volume = read_volume(label_path)
    index = np.argwhere(np.asarray(volume.data) > 0)
    corners = np.array([index.min(0), index.max(0)], dtype=np.float64)
    world = corners @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    return world.min(0), world.max(0)


def landmark_matching(scans, landmark_files, label_files, components=None) -> dict:
    """Errors (mm) of matching every landmark of i in j, for every ordered pair."""
    from voxssl.data.phantoms.landmarks import read_landmarks
    from voxssl.embedding.similarity import SimilarityIndex

    index = SimilarityIndex(scans, components=components)
    landmarks = [read_landmarks(path) for path in landmark_files]
    boxes = [body_box_world(path) for path in label_files]
    errors: dict[str, list[float]] = {"organ_centroid": [], "vertebra": [], "junction": []}
    baseline: dict[str, list[float]] = {k: [] for k in errors}
    for i, j in permutations(range(len(scans)), 2):
        vertebrae_j = np.array(
            [e["world_mm"] for e in landmarks[j].values() if e["kind"] == "vertebra"]
        )
        for name, entry in landmarks[i].items():
            kind = entry["kind"]
            if kind != "vertebra" and name not in landmarks[j]:
                continue
            voxel = scans[i].nearest_voxel(entry["world_mm"])
            if voxel is None:
                continue
            match = index.best_match(j, index.similarity(j, index.vector_at(i, voxel)))
            guess = boxes[j][0] + (np.asarray(entry["world_mm"]) - boxes[i][0]) * (
                (boxes[j][1] - boxes[j][0]) / np.maximum(boxes[i][1] - boxes[i][0], 1e-6)
            )
            for point, bucket in ((np.asarray(match.world), errors), (guess, baseline)):
                if kind == "vertebra":
                    error = float(np.min(np.linalg.norm(vertebrae_j - point, axis=1)))
                else:
                    error = float(
                        np.linalg.norm(np.asarray(landmarks[j][name]["world_mm"]) - point)
                    )
                bucket[kind].append(error)

    def summary(values: dict[str, list[float]]) -> dict:
        every = [v for vs in values.values() for v in vs]
        out = {
            kind: {"mean_mm": float(np.mean(vs)), "median_mm": float(np.median(vs)), "n": len(vs)}
            for kind, vs in values.items()
        }
        out["all"] = {
            "mean_mm": float(np.mean(every)),
            "median_mm": float(np.median(every)),
            "within_10mm": float(np.mean(np.asarray(every) <= 10.0)),
            "n": len(every),
        }
        return out

    return {
        "embedding": summary(errors),
        "body_box_reference": summary(baseline),
        "pca_energy": index.energy,
    }


def dice(predicted: np.ndarray, truth: np.ndarray, organ: int) -> float | None:
    p, t = predicted == organ, truth == organ
    if not t.any():
        return None
    return 2.0 * float((p & t).sum()) / float(p.sum() + t.sum())


def score(predicted_path: Path, truth_path: Path, organs) -> dict[str, float | None]:
    """Dice per organ, both read as RAS (the prediction is in the query's own grid)."""
    from voxssl.data.readers import read_volume
    from voxssl.vocabulary import organ_name

    predicted = np.rint(read_volume(predicted_path).data).astype(np.int64)
    truth = np.rint(read_volume(truth_path).data).astype(np.int64)
    if predicted.shape != truth.shape:
        raise SystemExit(f"{predicted_path}: shape {predicted.shape} != reference {truth.shape}")
    return {organ_name(o): dice(predicted, truth, o) for o in organs}


def mean_dice(per_organ: dict) -> float:
    values = [v for v in per_organ.values() if v is not None]
    return float(np.mean(values)) if values else float("nan")


def one_shot_phantoms(weights: Path, images, labels, work: Path, embeddings: Path) -> dict:
    """Support = the first phantom, queries = the others; stride 1 (what ``auto`` picks for
    these phantoms), reusing the landmark part's embeddings."""
    from voxssl.embedding.oneshot import one_shot_files

    started = time.perf_counter()
    written = one_shot_files(
        weights,
        images[0],
        labels[0],
        images[1:],
        work / "seg",
        classes=PHANTOM_ORGANS,
        embeddings=embeddings,
        stride=1,
        progress=False,
    )
    seconds = time.perf_counter() - started
    per_query = [score(p, t, PHANTOM_ORGANS) for p, t in zip(written, labels[1:], strict=True)]
    organs = {
        name: float(np.mean([q[name] for q in per_query if q[name] is not None]))
        for name in per_query[0]
    }
    return {
        "organs": organs,
        "mean_dice": mean_dice(organs),
        "queries": len(per_query),
        "seconds": seconds,
    }


def organ_ids(path: Path) -> set[int]:
    from voxssl.data.readers import read_volume

    return {int(i) for i in np.unique(np.rint(read_volume(path).data)) if i > 0}


def organ_medians(image: Path, label: Path, organs) -> dict[str, float | None]:
    """Median intensity of every organ (HU on CT): how alike the support's and query's organs look."""
    from voxssl.data.readers import read_volume
    from voxssl.vocabulary import organ_name

    values = np.asarray(read_volume(image).data)
    ids = np.rint(np.asarray(read_volume(label).data)).astype(np.int64)
    return {
        organ_name(o): (float(np.median(values[ids == o])) if (ids == o).any() else None)
        for o in organs
    }


def own_slab(image: Path, label: Path, folder: Path, slices: int = 14) -> tuple[Path, Path]:
    """``slices`` axial slices of ``image`` and ``label`` around the liver's median slice, with
    their affine moved accordingly (a query cut from the support itself)."""
    import nibabel as nib

    folder.mkdir(parents=True, exist_ok=True)
    scan, truth = nib.load(str(image)), nib.load(str(label))
    ids = np.rint(np.asarray(truth.dataobj)).astype(np.int64)
    first = max(0, int(np.median(np.argwhere(ids == 6)[:, 2])) - slices // 2)
    affine = scan.affine.copy()
    affine[:3, 3] = scan.affine[:3, :3] @ [0, 0, first] + scan.affine[:3, 3]
    out = []
    for name, data in (("slab", np.asarray(scan.dataobj)), ("slab_label", ids.astype(np.uint8))):
        path = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data[:, :, first : first + slices], affine), str(path))
        out.append(path)
    return out[0], out[1]


def one_shot_real(weights: Path, real: Path, work: Path) -> dict:
    """One-shot from ts_ct to the DICOM CT series and to ts_mr (``voxssl one-shot`` defaults);
    for CT -> CT also each method alone and the organs' median HU in support and query (why a
    method fails: a contrast phase that differs between the two scans shows there). Not in the
    gate: ts_ct to a 14-slice slab cut from itself (same patient and contrast phase: a ceiling,
    not a test)."""
    from voxssl.embedding.oneshot import OneShotConfig, one_shot_files

    support, support_label = real / "ts_ct.nii.gz", real / "ts_ct_label_btcv.nii.gz"
    slab, slab_label = own_slab(support, support_label, work / "slab_of_support")
    results: dict[str, dict] = {}
    for key, query, truth, modality in (
        ("ct_to_ct_dicom", real / "dicom_ct", real / "dicom_ct_label_btcv_RAS.nii.gz", None),
        ("ct_to_mr", real / "ts_mr.nii.gz", real / "ts_mr_label_btcv.nii.gz", "mr"),
        ("ct_to_own_slab", slab, slab_label, None),
    ):
        organs = sorted(organ_ids(support_label) & organ_ids(truth))
        methods = ("both", "prototype", "neighbours") if key == "ct_to_ct_dicom" else ("both",)
        for method in methods:
            started = time.perf_counter()
            (written,) = one_shot_files(
                weights,
                support,
                support_label,
                [query],
                work / key / method,
                classes=organs,
                cfg=OneShotConfig(method=method),
                embeddings=work / "emb",
                query_modality=modality,
                progress=False,
            )
            per_organ = score(written, truth, organs)
            entry = {
                "organs": per_organ,
                "mean_dice": mean_dice(per_organ),
                "seconds": time.perf_counter() - started,
            }
            if method == "both":
                results[key] = entry
            else:
                results[key].setdefault("by_method", {})[method] = entry
        if key == "ct_to_ct_dicom":
            results[key]["median_hu"] = {
                "support": organ_medians(support, support_label, organs),
                "query": organ_medians(query, truth, organs),
            }
    return results


def server_latency(explorer, clicks: int = 30, seed: int = 0) -> dict:
    """Server time of ``clicks`` clicks at random body voxels of scan 0 (ms: median, p95)."""
    rng = np.random.default_rng(seed)
    scan = explorer.scans[0]
    body = np.argwhere(scan.body)
    times, cpu = [], []
    for voxel in body[rng.choice(len(body), size=clicks, replace=False)]:
        header, _ = explorer.click(0, scan.voxel_to_world(voxel)[0])
        times.append(header["server_ms"])
        cpu.append(header["server_cpu_ms"])
    return {
        "median_ms": float(np.median(times)),
        "p95_ms": float(np.percentile(times, 95)),
        "cpu_median_ms": float(np.median(cpu)),
        "clicks": clicks,
    }


def _browser_flags() -> list[str]:
    """The chromium flags of the browser test (tests/embedding/test_explore_browser.py)."""
    import ast

    source = (REPO / "tests" / "embedding" / "test_explore_browser.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", None) == "CHROMIUM_FLAGS"
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit("CHROMIUM_FLAGS not found in the browser test")


def browser_latency(explorer, clicks: int = 12) -> dict:
    """Click-to-overlay in headless chromium against the real server (page timings)."""
    from voxssl.explore.server import ExploreServer

    flags = _browser_flags()
    from playwright.sync_api import sync_playwright

    executable = "/usr/bin/chromium"
    rng = np.random.default_rng(1)
    scan = explorer.scans[0]
    body = np.argwhere(scan.body)
    with (
        ExploreServer(explorer, port=0) as server,
        tempfile.TemporaryDirectory() as profile,
        sync_playwright() as pw,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=executable,
            headless=True,
            args=flags,
            viewport={"width": 1400, "height": 720},
        )
        page = context.new_page()
        started = time.perf_counter()
        page.goto(server.url)
        page.wait_for_function(
            "window.voxsslExplore && window.voxsslExplore.ready", timeout=600_000
        )
        load_seconds = time.perf_counter() - started
        done = 0
        for voxel in body[rng.choice(len(body), size=clicks, replace=False)]:
            point = page.evaluate(
                "([i, mm]) => window.voxsslExplore.pagePointOf(i, mm)",
                [0, scan.voxel_to_world(voxel)[0].tolist()],
            )
            if point is None:
                continue
            page.mouse.click(point["x"], point["y"])
            done += 1
            page.wait_for_function(
                f"window.voxsslExplore.clicks + window.voxsslExplore.outside >= {done}",
                timeout=120_000,
            )
        timings = page.evaluate("window.voxsslExplore.timings")
        screenshot = page.screenshot()
        context.close()
    total = [t["total_ms"] for t in timings]
    fetch = [t["fetch_ms"] for t in timings]
    return {
        "page_load_seconds": load_seconds,
        "clicks": len(total),
        "click_to_overlay_median_ms": float(np.median(total)),
        "click_to_overlay_p95_ms": float(np.percentile(total, 95)),
        "click_to_answer_median_ms": float(np.median(fetch)),
        "screenshot": screenshot,
    }


def synthetic_grid_latency(work: Path, shape=(103, 103, 75), dim: int = 160) -> dict:
    """Server time for an embedding grid of ``shape`` x ``dim`` (random values), full and PCA 32."""
    from voxssl.embedding.store import (
        BODY_FILE,
        EMBEDDING_FILE,
        FORMAT,
        META_FILE,
        VERSION,
        StoredEmbedding,
    )
    from voxssl.explore.server import Explorer

    rng = np.random.default_rng(0)
    scans = []
    for k in range(2):
        folder = work / f"synthetic{k}"
        folder.mkdir(parents=True, exist_ok=True)
        array = np.lib.format.open_memmap(
            folder / EMBEDDING_FILE, mode="w+", dtype=np.float16, shape=(*shape, dim)
        )
        for x in range(shape[0]):
            array[x] = rng.standard_normal((shape[1], shape[2], dim)).astype(np.float16)
        array.flush()
        del array
        np.save(folder / BODY_FILE, np.ones(shape, dtype=bool))
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "shape": list(shape),
            "dim": dim,
            "stride": 4,
            "affine": np.diag([4.0, 4.0, 8.0, 1.0]).tolist(),
            "fingerprint": {"source": {"path": "synthetic"}},
            "preprocess_meta": {},
        }
        (folder / META_FILE).write_text(json.dumps(meta))
        scans.append(StoredEmbedding.open(folder))
    result = {"grid": list(shape), "dim": dim}
    for label, components in (("full", None), ("pca32", 32)):
        started = time.perf_counter()
        explorer = Explorer(scans, components=components)
        result[label] = {"index_seconds": time.perf_counter() - started, **server_latency(explorer)}
    return result


def latency(weights: Path, work: Path, browser: bool) -> dict:
    from voxssl.embedding.embed import load_embedder
    from voxssl.explore.launch import open_scans
    from voxssl.explore.server import Explorer

    images = write_phantoms(
        work / "big", 2, seed=2, prefix="big", shape=(512, 512, 150), spacing=(0.8, 0.8, 2.5)
    )
    started = time.perf_counter()
    scans = open_scans(images, str(weights), work / "emb", stride="auto", progress=False)
    embed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    explorer = Explorer(scans, components=32)
    result = {
        "scan_shape": [512, 512, 150],
        "scan_spacing_mm": [0.8, 0.8, 2.5],
        "model_spacing_mm": load_embedder(weights).plan.preprocessing["spacing"],
        "embedding_grid": list(scans[0].shape),
        "stride": scans[0].stride,
        "dim": scans[0].dim,
        "embed_seconds_two_scans": embed_seconds,
        "index_seconds": time.perf_counter() - started,
        "server": server_latency(explorer),
    }
    if browser:
        for display, clicks in (("model", 12), ("scan", 5)):
            explorer.display = display
            explorer._volumes.clear()
            measured = browser_latency(explorer, clicks)
            (work / f"explore_{display}.png").write_bytes(measured.pop("screenshot"))
            result[f"browser_{display}_display"] = measured
    result["paper_size_grid"] = synthetic_grid_latency(work)
    return result


def run_arm(weights: Path, heldout: dict, work: Path, real: Path | None) -> dict:
    from voxssl.embedding.embed import ensure_embeddings, load_embedder

    embedder = load_embedder(weights)
    started = time.perf_counter()
    scans = ensure_embeddings(
        embedder, heldout["images"], work / "landmark-emb", stride=1, progress=False
    )
    embed_seconds = time.perf_counter() - started
    result = {
        "embed_seconds": embed_seconds,
        "landmarks": landmark_matching(scans, heldout["landmarks"], heldout["labels"]),
        "landmarks_pca32": landmark_matching(
            scans, heldout["landmarks"], heldout["labels"], components=32
        ),
        "one_shot_phantoms": one_shot_phantoms(
            weights, heldout["images"], heldout["labels"], work / "oneshot", work / "landmark-emb"
        ),
    }
    if real is not None:
        result["one_shot_real"] = one_shot_real(weights, real, work / "real")
    return result


def gate(result: dict) -> list[str]:
    """The comparisons pretrained must win; returns the failures."""
    pre, rnd = result["pretrained"], result["random_init"]
    failures = []
    if (
        not pre["landmarks"]["embedding"]["all"]["mean_mm"]
        < rnd["landmarks"]["embedding"]["all"]["mean_mm"]
    ):
        failures.append("landmark error on phantoms")
    if not pre["one_shot_phantoms"]["mean_dice"] > rnd["one_shot_phantoms"]["mean_dice"]:
        failures.append("one-shot Dice on phantoms")
    if "one_shot_real" in pre:
        for key, text in (
            ("ct_to_ct_dicom", "the real CT"),
            ("ct_to_mr", "the real MR (CT -> MR)"),
        ):
            if not pre["one_shot_real"][key]["mean_dice"] > rnd["one_shot_real"][key]["mean_dice"]:
                failures.append(f"one-shot Dice on {text}")
    return failures


def _pct(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def pretraining_text(result: dict) -> str:
    """What the pretrained arm was pretrained with, in words."""
    pretraining = result.get("pretraining") or {"name": "demo", **PRETRAININGS["demo"]}
    if pretraining["name"] == "given":
        return pretraining["text"]
    text = f"`--pretraining {pretraining['name']}`: {pretraining['text']}; {result['pretrain_cases']} unlabelled CT phantoms"
    if pretraining.get("support_ct"):
        text += " + the image of the real support ts_ct.nii.gz"
    if pretraining.get("overrides"):
        text += ", overrides " + " ".join(f"`{o}`" for o in pretraining["overrides"])
    return text


def markdown_section(result: dict) -> str:
    pre, rnd = result["pretrained"], result["random_init"]
    lines = [
        "## Voxel embedding: landmark matching, one-shot segmentation, explore latency (`benchmarks/embedding.py`)",
        "",
        f"Backbones: recipes/demo.yaml's model (64-d embedding, {result['model_spacing_mm']} mm), pretrained "
        f"({pretraining_text(result)}; {result['pretrain_steps']} steps, "
        f"{result['pretrain_seconds'] or 0:.0f} s) vs the same architecture randomly initialised, in one run. "
        f"{result['machine']}, {result['date']}. Protocol in the script's docstring.",
        "",
        f"**Landmark matching** between {result['heldout']} held-out phantoms (every ordered pair; error = distance "
        "from the best-matching voxel to the same landmark in the other phantom; lower is better):",
        "",
        "| landmarks | pretrained mean / median mm | random init mean / median mm | body-box reference mean mm |",
        "|---|---|---|---|",
    ]
    for kind in ("organ_centroid", "vertebra", "junction", "all"):
        p, r = pre["landmarks"]["embedding"][kind], rnd["landmarks"]["embedding"][kind]
        b = pre["landmarks"]["body_box_reference"][kind]
        lines.append(
            f"| {kind} (n={p['n']}) | {p['mean_mm']:.1f} / {p['median_mm']:.1f} | {r['mean_mm']:.1f} / "
            f"{r['median_mm']:.1f} | {b['mean_mm']:.1f} |"
        )
    p32, r32 = (
        pre["landmarks_pca32"]["embedding"]["all"],
        rnd["landmarks_pca32"]["embedding"]["all"],
    )
    lines += [
        "",
        f"Within 10 mm: pretrained {100 * pre['landmarks']['embedding']['all']['within_10mm']:.0f} %, random init "
        f"{100 * rnd['landmarks']['embedding']['all']['within_10mm']:.0f} %. With the embedding reduced to 32 PCA "
        f"dimensions (explore's default): pretrained {p32['mean_mm']:.1f} mm mean (PCA keeps "
        f"{100 * pre['landmarks_pca32']['pca_energy']:.1f} % of the energy), random init {r32['mean_mm']:.1f} mm.",
        "",
        "**One-shot segmentation** (`voxssl one-shot` defaults; Dice %):",
        "",
        "| support -> query | pretrained | random init |",
        "|---|---|---|",
        f"| phantom -> {pre['one_shot_phantoms']['queries']} other phantoms (mean of 9 organs) | "
        f"**{_pct(pre['one_shot_phantoms']['mean_dice'])}** | **{_pct(rnd['one_shot_phantoms']['mean_dice'])}** |",
    ]
    if "one_shot_real" in pre:
        for key, text in (
            ("ct_to_ct_dicom", "ts_ct -> DICOM CT series"),
            ("ct_to_mr", "ts_ct -> ts_mr (CT -> MR)"),
        ):
            p, r = pre["one_shot_real"][key], rnd["one_shot_real"][key]
            lines.append(
                f"| {text} (mean of {len(p['organs'])} organs) | **{_pct(p['mean_dice'])}** | **{_pct(r['mean_dice'])}** |"
            )
        p, r = (
            pre["one_shot_real"].get("ct_to_own_slab"),
            rnd["one_shot_real"].get("ct_to_own_slab"),
        )
        if p and r:
            lines.append(
                f"| not a test, a ceiling: ts_ct -> a 14-slice slab cut from ts_ct itself (mean of "
                f"{len(p['organs'])} organs; "
                + ", ".join(
                    f"{organ} {_pct(v)} / {_pct(r['organs'][organ])}"
                    for organ, v in p["organs"].items()
                )
                + f") | {_pct(p['mean_dice'])} | {_pct(r['mean_dice'])} |"
            )
    lines += ["", "| organ (phantoms) | pretrained | random init |", "|---|---|---|"]
    for organ, value in pre["one_shot_phantoms"]["organs"].items():
        lines.append(
            f"| {organ} | {_pct(value)} | {_pct(rnd['one_shot_phantoms']['organs'][organ])} |"
        )
    if "one_shot_real" in pre:
        ct_p, ct_r = pre["one_shot_real"]["ct_to_ct_dicom"], rnd["one_shot_real"]["ct_to_ct_dicom"]
        hu = ct_p.get("median_hu")
        lines += [
            "",
            "| organ, ts_ct -> DICOM CT | pretrained | random init | pretrained: prototype / "
            "neighbours only | random init: prototype / neighbours only | median HU in ts_ct / "
            "in the DICOM CT |",
            "|---|---|---|---|---|---|",
        ]

        def by_method(arm: dict, organ: str) -> str:
            methods = arm.get("by_method", {})
            return " / ".join(
                _pct(methods[m]["organs"][organ]) if m in methods else "n/a"
                for m in ("prototype", "neighbours")
            )

        def hu_text(organ: str) -> str:
            if not hu:
                return "n/a"
            return " / ".join(
                "n/a" if hu[side][organ] is None else f"{hu[side][organ]:.0f}"
                for side in ("support", "query")
            )

        for organ, value in ct_p["organs"].items():
            lines.append(
                f"| {organ} | {_pct(value)} | {_pct(ct_r['organs'][organ])} | "
                f"{by_method(ct_p, organ)} | {by_method(ct_r, organ)} | {hu_text(organ)} |"
            )
        lines += ["", "| organ, ts_ct -> ts_mr | pretrained | random init |", "|---|---|---|"]
        for organ, value in pre["one_shot_real"]["ct_to_mr"]["organs"].items():
            other = rnd["one_shot_real"]["ct_to_mr"]["organs"][organ]
            lines.append(f"| {organ} | {_pct(value)} | {_pct(other)} |")
    lat = result.get("latency")
    if lat:
        server = lat["server"]
        lines += [
            "",
            f"**Explore click latency** on a 512x512x150 CT phantom pair (0.8 x 0.8 x 2.5 mm), pretrained demo model "
            f"at {lat['model_spacing_mm']} mm, stride {lat['stride']} (embedding grid "
            f"{'x'.join(map(str, lat['embedding_grid']))} x {lat['dim']}-d, compared in 32 PCA dimensions; embedding "
            f"both scans took {lat['embed_seconds_two_scans']:.0f} s once, the index {lat['index_seconds']:.1f} s)"
            + (
                f"; **not measured in this run: reused from the run of {lat['reused_from']['date']}** "
                f"(`--latency-from {lat['reused_from']['file']}`; the times depend on the model's size, "
                "not on its weights):"
                if lat.get("reused_from")
                else ":"
            ),
            "",
            "| measurement | median | p95 |",
            "|---|---|---|",
            f"| server: both similarity maps + best match + display range (wall, shared machine) | {server['median_ms']:.1f} ms | {server['p95_ms']:.1f} ms |",
            f"| same, CPU time of the answering thread | {server['cpu_median_ms']:.1f} ms | |",
        ]
        for display, text in (
            ("model", "scans shown on the model's grid (`--display model`)"),
            ("scan", "scans shown at full resolution (default)"),
        ):
            b = lat.get(f"browser_{display}_display")
            if b:
                lines += [
                    f"| browser, {text}: click -> answer received | {b['click_to_answer_median_ms']:.0f} ms | |",
                    f"| browser, {text}: click -> overlays drawn on both scans | {b['click_to_overlay_median_ms']:.0f} ms | {b['click_to_overlay_p95_ms']:.0f} ms |",
                ]
        big = lat["paper_size_grid"]
        lines += [
            f"| server, a {'x'.join(map(str, big['grid']))} x {big['dim']}-d grid (random values; recipes/ct.yaml's "
            f"width, more vectors than its 1x1x2 mm model gives on that CT), full | "
            f"{big['full']['median_ms']:.1f} ms | {big['full']['p95_ms']:.1f} ms |",
            f"| same grid, 32 PCA dimensions | {big['pca32']['median_ms']:.1f} ms | {big['pca32']['p95_ms']:.1f} ms |",
        ]
        if any(f"browser_{d}_display" in lat for d in ("model", "scan")):
            lines += [
                "",
                "Browser rows: headless chromium with software WebGL (SwiftShader) on the shared 2-core machine, "
                "so NiiVue's GPU work (reslicing the overlay onto the displayed scan) runs on the CPU; a laptop's GPU "
                "does it in its own hardware (not measured: no GPU lent). Page load (both scans) took "
                + ", ".join(
                    f"{lat[f'browser_{d}_display']['page_load_seconds']:.0f} s ({d} display)"
                    for d in ("model", "scan")
                    if f"browser_{d}_display" in lat
                )
                + ".",
            ]
    failures = result["gate_failures"]
    lines += [
        "",
        "Gate (pretrained beats random init on the phantom landmark error and on the one-shot Dice on phantoms, "
        f"on the real CT and CT -> MR): **{'passed' if not failures else 'FAILED: ' + ', '.join(failures)}**.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work", type=Path, default=None, help="Working folder (default: temporary)."
    )
    parser.add_argument("--pretrain-cases", type=int, default=8)
    parser.add_argument(
        "--pretraining",
        choices=sorted(PRETRAININGS),
        default=DEFAULT_PRETRAINING,
        help="Which pretraining of the demo model to compare with random init "
        f"(default {DEFAULT_PRETRAINING!r}; see PRETRAININGS in the script).",
    )
    parser.add_argument(
        "--pretrain-steps", type=int, default=0, help="0: recipes/demo.yaml's value."
    )
    parser.add_argument("--heldout", type=int, default=6)
    parser.add_argument(
        "--backbone", type=Path, default=None, help="Reuse this pretrained backbone."
    )
    parser.add_argument("--real-data", type=Path, default=REAL_DATA)
    parser.add_argument("--browser", action="store_true", help="Also measure in headless chromium.")
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--latency-from",
        type=Path,
        default=None,
        help="Skip the latency part and copy its figures from this earlier results JSON "
        "(reported as reused, with that run's date).",
    )
    parser.add_argument(
        "--screenshot", type=Path, default=None, help="Save the browser's screenshot here."
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from voxssl.utils.atomic import atomic_write_text
    from voxssl.utils.markdown_section import replace_section

    real = args.real_data if (args.real_data / "ts_ct.nii.gz").is_file() else None
    if real is None:
        print(
            f"real data not found at {args.real_data}: the real-CT part is skipped", file=sys.stderr
        )
    with tempfile.TemporaryDirectory(prefix="embedding_benchmark_") as tmp:
        work = args.work or Path(tmp)
        pretrain_seconds = None
        pretraining = PRETRAININGS[args.pretraining]
        if pretraining["support_ct"] and real is None:
            raise SystemExit(
                f"--pretraining {args.pretraining} pretrains on {args.real_data}/ts_ct.nii.gz, "
                "which is missing"
            )
        if args.backbone is None:
            backbone, pretrain_seconds = pretrain_demo(
                work,
                args.pretrain_cases,
                args.pretrain_steps,
                overrides=pretraining["overrides"],
                support_ct=real / "ts_ct.nii.gz" if real and pretraining["support_ct"] else None,
            )
        else:
            backbone = args.backbone
        from voxssl.models.weights import read_plan

        plan = read_plan(backbone)
        arms = {
            "pretrained": backbone,
            "random_init": random_like(backbone, work / "random.safetensors"),
        }
        images = write_phantoms(work / "heldout", args.heldout, seed=1, prefix="heldout")
        heldout = {
            "images": images,
            "labels": [work / "heldout" / "labels" / p.name for p in images],
            "landmarks": [
                work / "heldout" / "landmarks" / p.name.replace(".nii.gz", ".json") for p in images
            ],
        }
        result = {
            "benchmark": "embedding",
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()} CPU x{os.cpu_count()}",
            "pretrain_cases": args.pretrain_cases,
            "pretrain_steps": (plan.recipe.get("pretrain") or {}).get("steps"),
            "pretrain_seconds": pretrain_seconds,
            "pretraining": (
                {"name": args.pretraining, **pretraining}
                if args.backbone is None
                else {"name": "given", "text": f"the backbone {args.backbone}"}
            ),
            "model_spacing_mm": plan.preprocessing.get("spacing"),
            "heldout": args.heldout,
        }
        for arm, weights in arms.items():
            print(f"--- {arm}", flush=True)
            result[arm] = run_arm(Path(weights), heldout, work / arm, real)
        if args.latency_from is not None:
            earlier = json.loads(args.latency_from.read_text(encoding="utf-8"))
            if "latency" not in earlier:
                raise SystemExit(f"{args.latency_from}: no latency figures in it")
            result["latency"] = {
                **earlier["latency"],
                "reused_from": {"file": str(args.latency_from), "date": earlier.get("date")},
            }
        elif not args.no_latency:
            result["latency"] = latency(Path(backbone), work / "latency", args.browser)
            shot = work / "latency" / "explore_scan.png"
            if args.screenshot and shot.is_file():
                args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                args.screenshot.write_bytes(shot.read_bytes())
    result["gate_failures"] = gate(result)
    atomic_write_text(args.results, json.dumps(result, indent=2, default=str) + "\n")
    if not args.no_readme:
        replace_section(README, SECTION, markdown_section(result))
    print(markdown_section(result))
    return 1 if result["gate_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
