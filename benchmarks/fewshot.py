"""Few-shot (ALPNet) throughput.

Protocol
--------
CPU (default, ``--device cpu``):

* episodes/s of the demo recipe (recipes/fewshot_demo.yaml: tiny CNN, 96 x 96 slices, 24 x 24
  grid): superpixel episode sampling + augmentation + forward + backward + SGD step, on one
  synthetic CT phantom (``generate_phantom(0)`` at 4 x 4 x 5 mm, window [-125, 275] HU, superpixels
  computed first). ``--warmup`` steps, then ``--steps`` timed; fp32; ``--threads`` torch threads.
  Sampling alone (no network) is timed too, and the process CPU time per episode (a figure that
  does not depend on how busy a shared machine is).
* forward time of DINOv2 ViT-S/14 (random init, ``transformers`` Dinov2Model) on one 3-channel
  slice at 252 x 252 (18 x 18 patches, the training size) and 672 x 672 (48 x 48, the test size of
  seed 000): no grad, fp32, median of ``--repeats`` after one warm-up.

GPU (``--device cuda``; run by the lead when a GPU is lent): DINOv2 ViT-L/14 (random init, LoRA
r 4 on qkv/proj/fc1/fc2) inside ALPNet, bf16 autocast:

* training episodes/s at 256 (-> 252) input, batch 1 episode (support + query), SGD as the recipe;
* TTT steps/s at the test size 672 (the same episode step on a query slice and its prediction);
* inference slices/s at 672 with the support encoded once, 8 query slices per forward;
* peak GPU memory of each.

Results are merged into benchmarks/results/fewshot.json under "cuda" or "cpu-<threads>-threads".
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "fewshot.json"


def _phantom_source(size: int):
    from voxssl.config.data import PreprocessConfig
    from voxssl.data.phantoms.generate import generate_phantom
    from voxssl.data.preprocess import preprocess_volume
    from voxssl.data.volume import Volume
    from voxssl.fewshot.episodes import EpisodeSource
    from voxssl.fewshot.slices import SliceVolume
    from voxssl.fewshot.superpixels import SuperpixelParams, volume_superpixels

    phantom = generate_phantom(0, "ct")
    volume = Volume(
        phantom.image,
        phantom.affine,
        phantom.affine,
        phantom.shape,
        np.array([[0, 1], [1, 1], [2, 1]], dtype=float),
        Path("phantom"),
    )
    cfg = PreprocessConfig()
    cfg.ct.spacing = (4.0, 4.0, 5.0)
    cfg.ct.window_hu = (-125.0, 275.0)
    image, _, body, _ = preprocess_volume(volume, "ct", cfg)
    superpixels = volume_superpixels(image, body, SuperpixelParams(1.0, 1.0, 60, size))
    return EpisodeSource(
        "phantom", SliceVolume(image, size), superpixels, np.ones(image.shape[-1], dtype=bool)
    )


def bench_cpu_episodes(steps: int, warmup: int) -> dict:
    from voxssl.config.fewshot import FewShotConfig
    from voxssl.config.loader import from_dict, read_yaml
    from voxssl.fewshot.augment import EpisodeAugment
    from voxssl.fewshot.episodes import SuperpixelEpisodes
    from voxssl.fewshot.model import build_alpnet
    from voxssl.fewshot.train import make_optimiser

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "fewshot_demo.yaml"
    config = from_dict(
        FewShotConfig, read_yaml(recipe)["fewshot"], where="fewshot", source=str(recipe)
    )
    episodes = SuperpixelEpisodes(
        [_phantom_source(config.image_size)], EpisodeAugment(config.augment)
    )
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    model = build_alpnet(config).train()
    optimiser = make_optimiser(model, config.optim)

    def step() -> None:
        episode = episodes.sample(rng)
        loss, _ = model.loss(
            episode.support, episode.support_label, episode.query, episode.query_label
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    for _ in range(warmup):
        step()
    began, cpu_began = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    train_rate = steps / (time.perf_counter() - began)
    cpu_per_episode = (time.process_time() - cpu_began) / steps  # all threads of this process
    began = time.perf_counter()
    for _ in range(steps):
        episodes.sample(rng)
    sample_rate = steps / (time.perf_counter() - began)
    return {
        "episodes_per_s": train_rate,
        "cpu_s_per_episode": cpu_per_episode,
        "sampling_only_per_s": sample_rate,
        "image_size": config.image_size,
        "encoder": "cnn " + str(config.encoder.cnn_channels),
        "steps": steps,
    }


def bench_vit_forward(size: str, inputs: list[int], repeats: int, device: torch.device) -> dict:
    from transformers import Dinov2Model

    from voxssl.fewshot.dinov2 import DinoV2Features, dinov2_config

    torch.manual_seed(0)
    model = DinoV2Features(Dinov2Model(dinov2_config(size))).to(device).eval()
    out = {}
    for pixels in inputs:
        x = torch.rand(1, 3, pixels, pixels, device=device)
        times = []
        with torch.no_grad():
            for index in range(repeats + 1):
                _sync(device)
                began = time.perf_counter()
                model(x)
                _sync(device)
                if index:
                    times.append(time.perf_counter() - began)
        out[f"forward_ms_{pixels}"] = 1000 * statistics.median(times)
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_gpu(steps: int, warmup: int) -> dict:
    """ViT-L/14 + LoRA ALPNet: training episodes/s (256), TTT steps/s (672), inference slices/s (672)."""
    from voxssl.config.fewshot import EncoderConfig, FewShotConfig
    from voxssl.device import autocast
    from voxssl.fewshot.model import build_alpnet
    from voxssl.fewshot.train import make_optimiser

    device = torch.device("cuda")
    config = FewShotConfig(encoder=EncoderConfig(type="dinov2", size="large", pretrained=False))
    torch.manual_seed(0)
    model = build_alpnet(config).to(device)
    optimiser = make_optimiser(model, config.optim)
    results = {
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)
    }

    def episode_rate(pixels: int, train_grid: int) -> tuple[float, float]:
        model.train()
        model.grid = train_grid
        image = torch.rand(1, 3, pixels, pixels, device=device)
        label = torch.zeros(1, pixels, pixels, dtype=torch.uint8, device=device)
        label[:, pixels // 4 : pixels // 2, pixels // 4 : pixels // 2] = 1
        torch.cuda.reset_peak_memory_stats()
        for index in range(warmup + steps):
            if index == warmup:
                torch.cuda.synchronize()
                began = time.perf_counter()
            with autocast(device, True):
                loss, _ = model.loss(image, label, image, label)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        torch.cuda.synchronize()
        return steps / (time.perf_counter() - began), torch.cuda.max_memory_allocated() / 2**30

    rate, memory = episode_rate(config.image_size, config.alp.feature_grid)
    results.update(train_episodes_per_s_256=rate, train_peak_gib_256=memory)
    rate, memory = episode_rate(672, 48)  # seed 000: 672 x 672 at test time, a 48 x 48 grid
    results.update(ttt_steps_per_s_672=rate, ttt_peak_gib_672=memory)

    model.eval()
    model.eval_grid = 48
    support = torch.rand(1, 3, 672, 672, device=device)
    label = torch.zeros(1, 672, 672, dtype=torch.uint8, device=device)
    label[:, 200:400, 200:400] = 1
    queries = torch.rand(8, 3, 672, 672, device=device)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad(), autocast(device, True):
        s_feat = model.encode(support)
        for index in range(warmup + steps):
            if index == warmup:
                torch.cuda.synchronize()
                began = time.perf_counter()
            model.segment_features(s_feat, label, model.encode(queries), (672, 672))
        torch.cuda.synchronize()
    results.update(
        infer_slices_per_s_672=8 * steps / (time.perf_counter() - began),
        infer_peak_gib_672=torch.cuda.max_memory_allocated() / 2**30,
    )
    results["vit_l_forward"] = bench_vit_forward("large", [252, 672], 10, device)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
        result = {
            "threads": args.threads,
            "demo_episodes": bench_cpu_episodes(args.steps, args.warmup),
            "vit_s14_forward": bench_vit_forward(
                "small", [252, 672], args.repeats, torch.device("cpu")
            ),
        }
    else:
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device")
        result = {"gpu": torch.cuda.get_device_name(), **bench_gpu(args.steps, args.warmup)}
    result["torch"] = torch.__version__
    stored = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.is_file() else {}
    stored[args.device if args.device == "cuda" else f"cpu-{args.threads}-threads"] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(stored, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
