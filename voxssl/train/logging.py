"""What a pretraining run reports: TensorBoard scalars and images, and a tqdm progress bar.

Only rank 0 writes; other ranks get a logger whose methods do nothing. Scalars (tags):
``loss/total``, ``loss/<term>`` for each loss term, ``train/lr``, ``train/grad_norm``,
``perf/steps_per_s``, ``perf/pairs_per_s``, ``perf/data_wait_fraction``, ``perf/gpu_memory_gb``
(peak since the last log, GPU only). Image ``views/slice``: the middle z slice of view 1, its
reconstruction (when the model has a reconstruction head) and a PCA-to-RGB picture of its voxel
embeddings, side by side.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def pca_rgb(features: torch.Tensor) -> torch.Tensor:
    """(D, H, W) features -> (3, H, W) in [0, 1]: the first three principal components, each
    min-max scaled. Fewer than 3 channels are zero-padded."""
    d, h, w = features.shape
    flat = features.reshape(d, -1).T.float()  # (H*W, D)
    flat = flat - flat.mean(dim=0, keepdim=True)
    k = min(3, d, flat.shape[0])
    _, _, v = torch.linalg.svd(flat, full_matrices=False)
    comps = flat @ v[:k].T  # (H*W, k)
    low, high = comps.min(dim=0).values, comps.max(dim=0).values
    comps = (comps - low) / (high - low).clamp_min(1e-8)
    rgb = torch.zeros(h * w, 3)
    rgb[:, :k] = comps
    return rgb.T.reshape(3, h, w)


def slice_panel(
    image: torch.Tensor, reconstruction: torch.Tensor | None, embedding: torch.Tensor
) -> torch.Tensor:
    """(3, X, n*Y) picture of one slice: grey image | grey reconstruction (if any) | PCA of the
    embedding. ``image``/``reconstruction``: (C, X, Y) (channel 0 shown); ``embedding``: (D, X, Y)."""
    grey = lambda t: t[0].detach().float().cpu().clamp(0, 1).expand(3, -1, -1)  # noqa: E731
    panels = [grey(image)]
    if reconstruction is not None:
        panels.append(grey(reconstruction))
    panels.append(pca_rgb(embedding.detach().cpu()))
    return torch.cat(panels, dim=2)


class TrainLogger:
    """TensorBoard + progress bar for rank 0 (``enabled=False`` on the other ranks)."""

    def __init__(
        self,
        log_dir: Path,
        *,
        total_steps: int,
        start_step: int,
        enabled: bool = True,
        progress: bool = True,
    ) -> None:
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(log_dir), purge_step=start_step if start_step > 0 else None
        )
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total_steps,
                initial=start_step,
                desc="pretrain",
                unit="step",
                dynamic_ncols=True,
            )

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def image(self, step: int, tag: str, image: torch.Tensor) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, image.clamp(0, 1), global_step=step, dataformats="CHW")

    def advance(self, steps: int = 1, postfix: dict[str, float] | None = None) -> None:
        if self.bar is None:
            return
        self.bar.update(steps)
        if postfix:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


class ThroughputMeter:
    """Steps/s and the fraction of wall time the loop spent waiting for data, since the last read."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started = time.perf_counter()
        self.data_wait = 0.0
        self.steps = 0

    def add(self, data_wait_s: float) -> None:
        self.data_wait += data_wait_s
        self.steps += 1

    def read(self, pairs_per_step: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        out = {
            "perf/steps_per_s": self.steps / elapsed,
            "perf/pairs_per_s": self.steps * pairs_per_step / elapsed,
            "perf/data_wait_fraction": self.data_wait / elapsed,
        }
        self.reset()
        return out


def gpu_memory_gb(device: torch.device) -> dict[str, float]:
    """Peak allocated GPU memory since the last call (GB), and resets the peak."""
    if device.type != "cuda":
        return {}
    peak = torch.cuda.max_memory_allocated(device) / 1e9
    torch.cuda.reset_peak_memory_stats(device)
    return {"perf/gpu_memory_gb": peak}


__all__ = ["ThroughputMeter", "TrainLogger", "gpu_memory_gb", "pca_rgb", "slice_panel"]
