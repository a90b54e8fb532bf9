"""Development signals for choosing the embedding benchmark's pretraining, reading no query.

benchmarks/embedding.py's gate compares pretrained and random-init weights on real queries (the
DICOM CT series, ts_mr). Choosing the pretraining by those queries would be tuning on the test, so
the choice between ``--pretraining`` variants was made with these signals instead, for each given
backbone (the real queries are never read):

- landmark error (mean / median mm) and one-shot Dice on the benchmark's 6 held-out CT phantoms
  (seed 1), as in benchmarks/embedding.py;
- phantom CT -> MR: support held-out CT phantom 0, queries 4 MR phantoms (seed 3, other patients),
  ``--query-modality mr``: the modality shift of the CT -> MR part;
- ts_ct -> the 14-slice slab cut from ts_ct itself (benchmarks/embedding.py's ceiling), and the same
  slab with the phantom generator's portal-venous enhancement (voxssl.data.phantoms.appearance
  CT_TISSUES ``enhancement``) added to every labelled organ: a contrast-phase shift made from the
  support alone, the shift between ts_ct and the DICOM series.

    .venv/bin/python benchmarks/embedding_dev_signals.py --work /tmp/dev \\
        --backbone demo=/tmp/eb/runs/embedding-benchmark/backbone.safetensors \\
        --backbone random=/tmp/eb/random.safetensors ...

Writes one JSON per backbone under ``--work`` and all of them to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import embedding as bench  # a sibling script, not a package

RESULTS = bench.REPO / "benchmarks" / "results" / "embedding_dev_signals.json"

#: BTCV organ id -> the phantom tissue whose portal-venous enhancement it gets (adrenals: pancreas).
ENHANCED_AS = {
    1: "spleen",
    2: "kidney",
    3: "kidney",
    4: "bile",
    6: "liver",
    7: "stomach_wall",
    8: "aorta",
    9: "ivc",
    10: "liver_vessel",
    11: "pancreas",
    12: "pancreas",
    13: "pancreas",
}


def enhanced_copy(slab: Path, slab_label: Path, out: Path) -> Path:
    """``slab`` with every labelled organ raised by its tissue's enhancement (HU)."""
    import nibabel as nib

    from voxssl.data.phantoms.appearance import CT_TISSUES

    if out.is_file():
        return out
    image = nib.load(str(slab))
    label = np.rint(np.asarray(nib.load(str(slab_label)).dataobj)).astype(int)
    data = np.asarray(image.dataobj).astype(np.float32)
    for organ, tissue in ENHANCED_AS.items():
        data[label == organ] += CT_TISSUES[tissue].enhancement
    nib.save(nib.Nifti1Image(data.astype(np.int16), image.affine), str(out))
    return out


def mr_phantoms(folder: Path, n: int = 4, seed: int = 3) -> list[tuple[Path, Path]]:
    """``n`` MR phantoms (image, label) of ``voxssl phantoms --modality mr`` with ``seed``."""
    from voxssl.data.phantoms import write_phantom_dataset

    images = write_phantom_dataset(folder, n, "mr", seed=seed, progress=False)
    return [(image, folder / "labels" / image.name) for image in images]


def signals(name: str, backbone: Path, shared: Path, out: Path, real: Path) -> dict:
    from voxssl.embedding.embed import ensure_embeddings, load_embedder
    from voxssl.embedding.oneshot import one_shot_files

    started = time.perf_counter()
    images = sorted((shared / "heldout" / "images").glob("*.nii.gz"))
    if not images:
        images = bench.write_phantoms(shared / "heldout", 6, seed=1, prefix="heldout")
    heldout = {
        "images": images,
        "labels": [shared / "heldout" / "labels" / p.name for p in images],
        "landmarks": [
            shared / "heldout" / "landmarks" / p.name.replace(".nii.gz", ".json") for p in images
        ],
    }
    mr = mr_phantoms(shared / "mr")
    support, support_label = real / "ts_ct.nii.gz", real / "ts_ct_label_btcv.nii.gz"
    slab, slab_label = bench.own_slab(support, support_label, shared / "slab")
    enhanced = enhanced_copy(slab, slab_label, shared / "slab" / "slab_enhanced.nii.gz")

    scans = ensure_embeddings(
        load_embedder(backbone), heldout["images"], out / "landmark-emb", stride=1, progress=False
    )
    result: dict = {
        "backbone": str(backbone),
        "landmarks": bench.landmark_matching(scans, heldout["landmarks"], heldout["labels"])[
            "embedding"
        ]["all"],
        "one_shot_phantoms": bench.one_shot_phantoms(
            backbone, heldout["images"], heldout["labels"], out / "oneshot", out / "landmark-emb"
        )["mean_dice"],
    }
    written = one_shot_files(
        backbone,
        heldout["images"][0],
        heldout["labels"][0],
        [image for image, _ in mr],
        out / "seg_mr",
        classes=bench.PHANTOM_ORGANS,
        embeddings=out / "landmark-emb",
        query_modality="mr",
        stride=1,
        progress=False,
    )
    per_query = [
        bench.score(p, label, bench.PHANTOM_ORGANS)
        for p, (_, label) in zip(written, mr, strict=True)
    ]
    result["one_shot_phantoms_ct_to_mr"] = float(np.mean([bench.mean_dice(q) for q in per_query]))
    organs = sorted(bench.organ_ids(support_label) & bench.organ_ids(slab_label))
    for key, query in (("own_slab", slab), ("own_slab_enhanced", enhanced)):
        (segmentation,) = one_shot_files(
            backbone,
            support,
            support_label,
            [query],
            out / key,
            classes=organs,
            embeddings=out / "emb",
            progress=False,
        )
        per_organ = bench.score(segmentation, slab_label, organs)
        result[key] = {
            "mean": bench.mean_dice(per_organ),
            "organs": {k: (None if v is None else round(v, 3)) for k, v in per_organ.items()},
        }
    result["seconds"] = time.perf_counter() - started
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument(
        "--backbone", action="append", required=True, help="NAME=PATH (repeat the option)."
    )
    parser.add_argument("--real-data", type=Path, default=bench.REAL_DATA)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from voxssl.utils.atomic import atomic_write_text

    if not (args.real_data / "ts_ct.nii.gz").is_file():
        raise SystemExit(f"{args.real_data}/ts_ct.nii.gz not found")
    results = {}
    for entry in args.backbone:
        name, _, path = entry.partition("=")
        if not path:
            raise SystemExit(f"--backbone {entry!r}: give NAME=PATH")
        results[name] = signals(
            name, Path(path), args.work / "shared", args.work / "eval" / name, args.real_data
        )
        print(name, json.dumps(results[name]), flush=True)
    document = {"benchmark": "embedding_dev_signals", "date": time.strftime("%Y-%m-%d")}
    atomic_write_text(args.results, json.dumps({**document, **results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
