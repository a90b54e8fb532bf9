"""Write the parity fixtures of tests/parity/ from the authors' reference code.

    python scripts/make_parity_fixtures.py \
        --vox2vec /tmp/ref/vox2vec \
        --hierarchical /tmp/ref/hierarchical-dense-ssl \
        --dinov2-alpnet /tmp/ref/DINOv2-based-Self-Supervised-Learning \
        --ssl-alpnet /tmp/ref/Self-supervised-Fewshot-Medical-Image-Segmentation

Each path is a checkout of the public repository (github.com/mishgon/vox2vec,
multimodallearning/hierarchical-dense-ssl, levayz/DINOv2-based-Self-Supervised-Learning,
cheng-01037/Self-supervised-Fewshot-Medical-Image-Segmentation); give only the ones to regenerate.
The script imports only the modules it exercises from that checkout (the reference code never
enters voxssl or the fixtures) and writes, under tests/fixtures/parity/:

* ``vox2vec_fpn.npz``: vox2vec's ``FPN3d`` (base 4, 3 levels) on an odd-sized input, eval and
  train mode, plus its ``FPNLinearHead`` and ``FPNNonLinearHead`` on the eval pyramid;
* ``hierarchical_step.npz``: one pretraining step of hierarchical-dense-ssl's ``Vox2Vec`` module
  (FPN base 2 x 5 levels, per-level projections to 32, projector 160-160-160-128, InfoNCE at 0.1,
  1x1x1 reconstruction head, loss InfoNCE + 10 MSE): the loss terms and gradients;
* ``local_aug_stats.json`` and ``bezier.npz``: the statistics of its local augmentations
  (``AppearanceTransform``) over many runs on a fixed input, and its Bezier curve on fixed points;
* ``alp_dinov2.npz`` / ``alp_ssl.npz``: ``FewShotSeg.forward`` of the two ALPNet codes on fixed
  features (the encoder replaced by the features), at test time and in training (alignment loss).

Weights and inputs are drawn by name (tests/parity/parity_common.py), so a fixture holds inputs or their
names, reference outputs and a weights checksum: a few hundred KB. ``fixtures.json`` records the
commit of every checkout used. Needs torch (the test's version) and what each imported module
imports: pytorch_lightning, matplotlib, joblib, more_itertools for hierarchical-dense-ssl
(a throw-away venv in /tmp that sees voxssl's site-packages is enough); torchvision is replaced by
an empty module (only the ResNet encoder, not exercised here, uses it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "parity"))

import parity_common as common  # noqa: E402  (tests/parity/parity_common.py)

OUT = common.FIXTURES
REPOSITORIES = {
    "vox2vec": "https://github.com/mishgon/vox2vec",
    "hierarchical": "https://github.com/multimodallearning/hierarchical-dense-ssl",
    "dinov2_alpnet": "https://github.com/levayz/DINOv2-based-Self-Supervised-Learning",
    "ssl_alpnet": "https://github.com/cheng-01037/Self-supervised-Fewshot-Medical-Image-Segmentation",
}


def commit_of(path: Path) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown (not a git checkout)"


def import_from(checkout: Path, module: str):
    """Import ``module`` from ``checkout`` alone (modules of another checkout with the same top-level
    names, e.g. ``models``, are dropped first)."""
    top = module.split(".")[0]
    for name in list(sys.modules):
        if name == top or name.startswith(top + "."):
            del sys.modules[name]
    sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(checkout))


def no_cuda() -> None:
    """The reference code calls .cuda() on modules and tensors it builds; keep them on the CPU."""
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]


def save_npz(name: str, **arrays) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUT / name, **{k: np.asarray(v) for k, v in arrays.items()})
    print(f"wrote {OUT / name} ({(OUT / name).stat().st_size // 1024} KB)")


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


# ------------------------------------------------------------------------------ vox2vec FPN + heads


def vox2vec_key_names(reference_state: dict, num_levels: int) -> dict[str, str]:
    """Reference FPN3d key -> voxssl FPN key, by voxssl's importer grammar (voxssl.hub.convert)."""
    from voxssl.hub.convert import parse_key, voxssl_key

    return {k: voxssl_key(parse_key(k, num_levels), num_levels) for k in reference_state}


def make_vox2vec(path: Path) -> dict:
    fpn_module = import_from(path, "vox2vec.nn.fpn")
    torch.manual_seed(0)
    fpn = fpn_module.FPN3d(in_channels=1, base_channels=4, num_scales=3)
    names = vox2vec_key_names(fpn.state_dict(), 3)
    fpn.load_state_dict(common.filled_state(fpn.state_dict(), names))
    fpn_checksum = common.checksum(fpn.state_dict())  # before train mode updates the BN statistics
    x = torch.from_numpy(common.deterministic_array("vox2vec_fpn/x", (2, 1, 11, 10, 6)))
    fpn.eval()
    with torch.no_grad():
        eval_levels = fpn(x)
    fpn.train()
    with torch.no_grad():
        train_levels = fpn(x.clone())
    linear = fpn_module.FPNLinearHead(4, 3, 5)
    linear_names = {
        f"layers.{i}.{p}": f"level_convs.{i}.{p}" for i in range(3) for p in ("weight", "bias")
    }
    linear.load_state_dict(common.filled_state(linear.state_dict(), linear_names))
    nonlinear = fpn_module.FPNNonLinearHead(4, 3, 5)
    nonlinear.load_state_dict(common.filled_state(nonlinear.state_dict()))
    nonlinear.eval()
    with torch.no_grad():
        linear_logits = linear([level.clone() for level in eval_levels])
        nonlinear_logits = nonlinear([level.clone() for level in eval_levels])
    arrays = {"x": to_numpy(x)}
    for i, (e, t) in enumerate(zip(eval_levels, train_levels, strict=True)):
        arrays[f"eval_level{i}"] = to_numpy(e)
        arrays[f"train_level{i}"] = to_numpy(t)
    arrays["linear_logits"] = to_numpy(linear_logits)
    arrays["nonlinear_logits"] = to_numpy(nonlinear_logits)
    arrays["checksum_fpn"] = np.float64(fpn_checksum)
    arrays["checksum_nonlinear"] = np.float64(common.checksum(nonlinear.state_dict()))
    save_npz("vox2vec_fpn.npz", **arrays)
    return {"key_map": names}


# ------------------------------------------------------------------------ hierarchical pretraining


HIER = {"base": 2, "levels": 5, "patch": (16, 16, 16), "pairs": 2, "positives": 40}
GRAD_KEYS = (
    "backbone.first_conv.weight",
    "backbone.projections.4.weight",
    "projector.layers.6.bias",
    "reconstruction_head.layers.0.weight",
    "reconstruction_head.layers.0.bias",
)


def hierarchical_names(model) -> dict[str, str]:
    """Reference ``Vox2Vec`` parameter -> voxssl ``PretrainModel`` key."""
    names = {f"backbone.{k}": f"backbone.{k}" for k in model.backbone.state_dict()}
    names.update({f"proj_head.{k}": f"projector.layers.{k}" for k in model.proj_head.state_dict()})
    names.update(
        {f"rest_head.{k}": f"reconstruction_head.layers.0.{k}" for k in ("weight", "bias")}
    )
    return names


def hierarchical_batch():
    """Views, clean crops and positives of the step (P pairs of 16^3 patches, N positives each)."""
    p, size, n = HIER["pairs"], HIER["patch"], HIER["positives"]
    arrays = {
        name: common.deterministic_array(f"hierarchical/{name}", (p, 1, *size))
        for name in ("view1", "view2", "target1", "target2")
    }
    positions = []
    for view in (1, 2):
        rng = common.seeded(f"hierarchical/positions{view}")
        per_pair = []
        for _ in range(p):
            flat = rng.choice(int(np.prod(size)), size=n, replace=False)
            per_pair.append(np.stack(np.unravel_index(flat, size), axis=1))
        positions.append(np.stack(per_pair).astype(np.int64))
    return arrays, positions[0], positions[1]


def make_hierarchical(path: Path) -> dict:
    no_cuda()
    fpn_module = import_from(path, "hb_ssl.nn.fpn")
    model_module = importlib.import_module("hb_ssl.pretrain.model")
    torch.manual_seed(0)
    backbone = fpn_module.FPN3d(1, HIER["base"], HIER["levels"])
    model = model_module.Vox2Vec(backbone, base_channels=HIER["base"], num_scales=HIER["levels"])
    names = hierarchical_names(model)
    model.load_state_dict(common.filled_state(model.state_dict(), names))
    for i, conv in enumerate(model.scale_proj):  # a plain list in the reference: set by hand
        for p in ("weight", "bias"):
            if getattr(conv, p) is not None:
                tensor = common.deterministic_tensor(
                    f"backbone.projections.{i}.{p}", tuple(getattr(conv, p).shape)
                )
                getattr(conv, p).data.copy_(tensor)
    arrays, pos1, pos2 = hierarchical_batch()
    logged: dict[str, float] = {}
    model.log = lambda name, value, **kw: logged.__setitem__(name, float(value))
    model.train()
    batch = {
        "pretrain": (
            torch.from_numpy(arrays["view1"]),
            torch.from_numpy(arrays["view2"]),
            torch.from_numpy(arrays["target1"]),
            torch.from_numpy(arrays["target2"]),
            [torch.from_numpy(v) for v in pos1],
            [torch.from_numpy(v) for v in pos2],
        )
    }
    loss = model.training_step(batch, 0)
    loss.backward()
    params = dict(model.named_parameters())
    for i, conv in enumerate(model.scale_proj):
        params[f"scale_proj.{i}.weight"] = conv.weight
        if conv.bias is not None:
            params[f"scale_proj.{i}.bias"] = conv.bias
    names.update(
        {
            f"scale_proj.{i}.{p}": f"backbone.projections.{i}.{p}"
            for i in range(5)
            for p in ("weight", "bias")
        }
    )
    grad_norms = {names[k]: float(v.grad.norm()) for k, v in params.items()}
    voxssl_grads = {names[k]: v.grad for k, v in params.items()}
    out = {
        "info_nce": np.float64(logged["pretrain/info_nce_loss"]),
        "mse": np.float64(logged["pretrain/mse_loss"]),
        "total": np.float64(float(loss)),
        "positions1": pos1,
        "positions2": pos2,
        "grad_norm_keys": np.array(sorted(grad_norms)),
        "grad_norms": np.array([grad_norms[k] for k in sorted(grad_norms)]),
    }
    for key in GRAD_KEYS:
        out["grad:" + key] = to_numpy(voxssl_grads[key])
    save_npz("hierarchical_step.npz", **out)
    return {"config": HIER}


# -------------------------------------------------------------------------- local augmentations


AUG_RUNS = 300
BEZIER_POINTS = [
    [[0, 0], [0.1, 0.8], [0.6, 0.3], [1, 1]],
    [[0, 0], [0.9, 0.05], [0.95, 0.2], [1, 1]],
    [[0, 0], [0.3, 0.3], [0.7, 0.7], [1, 1]],
    [[0, 0], [0.02, 0.5], [0.4, 0.98], [1, 1]],
]


def make_local_augmentations(path: Path) -> dict:
    module = import_from(path, "hb_ssl.utils.intensity_augmentations")
    image = common.augmentation_input()
    components = {
        "shuffle": {"is_local": True, "is_nonlinear": False, "is_in_painting": False},
        "nonlinear": {"is_local": False, "is_nonlinear": True, "is_in_painting": False},
        "inpainting": {"is_local": False, "is_nonlinear": False, "is_in_painting": True},
        "all": {"is_local": True, "is_nonlinear": True, "is_in_painting": True},
    }
    stats = {}
    for name, flags in components.items():
        # the rates of the authors' PretrainingDataset
        transform = module.AppearanceTransform(
            local_rate=0.8, nonlinear_rate=0.9, paint_rate=0.9, inpaint_rate=0.2, **flags
        )
        np.random.seed(1234)
        runs = [
            common.run_statistics(image, transform.rand_aug(image.copy())) for _ in range(AUG_RUNS)
        ]
        stats[name] = common.summarize_runs(runs)
        print(f"local augmentation {name}: {AUG_RUNS} runs")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "local_aug_stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    transform = module.AppearanceTransform()
    x = np.linspace(0.0, 1.0, 1001)
    curves = []
    for points in BEZIER_POINTS:
        xs, ys = transform.bezier_curve(points, nTimes=100000)
        curves.append(np.interp(x, np.sort(xs), np.sort(ys)))  # nonlinear_transformation's map
    save_npz(
        "bezier.npz", points=np.array(BEZIER_POINTS, dtype=np.float64), x=x, y=np.array(curves)
    )
    return {"runs": AUG_RUNS, "shape": list(common.AUG_SHAPE)}


# -------------------------------------------------------------------------------------------- ALP


ALP = {"channels": 8, "grid": 32, "image": 64}


def blob(center, radius, size) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (
        ((yy - center[0]) / radius[0]) ** 2 + ((xx - center[1]) / radius[1]) ** 2 <= 1.0
    ).astype(np.float32)


def alp_inputs():
    d, g, s = ALP["channels"], ALP["grid"], ALP["image"]
    support = common.deterministic_array("alp/support_features", (1, d, g, g), -1.0, 1.0)
    query = common.deterministic_array("alp/query_features", (1, d, g, g), -1.0, 1.0)
    masks = {
        "large": blob((30, 34), (16, 20), s),  # 4x4 windows of the 32 grid fully inside
        "small": blob((20, 44), (3, 4), s),  # no window qualifies: the global prototype alone
    }
    query_label = blob((34, 30), (15, 18), s)
    return support, query, masks, query_label


def make_alp(path: Path, variant: str) -> dict:
    """``variant``: dinov2 (levayz fork, nearest support masks) or ssl (SSL-ALPNet, bilinear)."""
    no_cuda()
    sys.modules["torchvision"] = types.ModuleType("torchvision")  # the ResNet encoder only
    module = import_from(path, "models.grid_proto_fewshot")
    support, query, masks, query_label = alp_inputs()
    features = torch.from_numpy(np.concatenate([support, query]))
    s = ALP["image"]

    def build():
        model = module.FewShotSeg.__new__(module.FewShotSeg)
        torch.nn.Module.__init__(model)
        model.image_size = s
        model.config = {
            "align": True,
            "which_model": "dinov2_l14" if variant == "dinov2" else "dlfcn_res101",
            "cls_name": "grid_proto",
            "proto_grid_size": 8,
            "use_slice_adapter": False,
            "lora": 0,
            "feature_hw": [ALP["grid"], ALP["grid"]],
            "debug": False,
        }
        model.get_cls()
        if variant == "dinov2":
            model.get_features = lambda images: features.clone()
        else:  # SSL-ALPNet calls the encoder directly
            model.encoder = lambda images, low_level=False: features.clone()
        return model

    images = [[torch.zeros(1, 3, s, s)]]
    query_images = [torch.zeros(1, 3, s, s)]
    out = {}
    for name, mask in masks.items():
        fg = torch.from_numpy(mask)[None]
        model = build().eval()
        with torch.no_grad():
            result = model(images, [[fg]], [[1.0 - fg]], query_images, isval=True, val_wsize=2)
        out[f"eval_{name}_logits"] = to_numpy(result[0])
        out[f"support_{name}"] = mask
    fg = torch.from_numpy(masks["large"])[None]
    model = build().train()
    result = model(images, [[fg]], [[1.0 - fg]], query_images, isval=False, val_wsize=None)
    logits, align = result[0], result[1]
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255, weight=torch.FloatTensor([0.05, 1.0]))
    out["train_logits"] = to_numpy(logits)
    out["train_query_loss"] = np.float64(
        float(criterion(logits.float(), torch.from_numpy(query_label)[None].long()))
    )
    out["train_align_loss"] = np.float64(float(align))
    out["query_label"] = query_label
    save_npz(f"alp_{variant}.npz", **out)
    return {"config": ALP}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vox2vec", type=Path, help="checkout of github.com/mishgon/vox2vec")
    parser.add_argument("--hierarchical", type=Path, help="checkout of hierarchical-dense-ssl")
    parser.add_argument(
        "--dinov2-alpnet", type=Path, help="checkout of DINOv2-based-Self-Supervised-Learning"
    )
    parser.add_argument(
        "--ssl-alpnet",
        type=Path,
        help="checkout of Self-supervised-Fewshot-Medical-Image-Segmentation",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder to write to (default tests/fixtures/parity)"
    )
    args = parser.parse_args()
    global OUT
    if args.out is not None:
        OUT = args.out
    torch.set_num_threads(1)
    manifest_path = OUT / "fixtures.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    jobs = [
        ("vox2vec", args.vox2vec, make_vox2vec),
        ("hierarchical", args.hierarchical, make_hierarchical),
        ("hierarchical_local_aug", args.hierarchical, make_local_augmentations),
        ("dinov2_alpnet", args.dinov2_alpnet, lambda p: make_alp(p, "dinov2")),
        ("ssl_alpnet", args.ssl_alpnet, lambda p: make_alp(p, "ssl")),
    ]
    if not any(path for _, path, _ in jobs):
        parser.error("give at least one checkout")
    for name, path, job in jobs:
        if path is None:
            continue
        if not path.is_dir():
            parser.error(f"{path}: not a folder")
        repo = name.replace("_local_aug", "")
        details = job(path.resolve())
        details.pop("key_map", None)
        manifest[name] = {
            "repository": REPOSITORIES[repo],
            "commit": commit_of(path),
            "torch": torch.__version__,
            **details,
        }
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    print(f"wrote {manifest_path}")


if __name__ == "__main__":
    main()
