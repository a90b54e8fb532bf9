"""Self-supervised ALPNet training on superpixel episodes: one loop, read top to bottom.

SGD (lr 1e-3, momentum 0.9, weight decay 5e-4), lr x 0.95 every 1K steps, 100K steps, batch 1
episode (SSL-ALPNet). The schedule is a function of the step, so resuming only restores the step,
the weights, the optimiser and the episode generator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from voxssl.config.fewshot import FewShotConfig, OptimConfig
from voxssl.device import autocast, resolve_device, set_cpu_threads
from voxssl.fewshot.checkpoint import (
    load_training_state,
    save_fewshot_weights,
    save_training_state,
)
from voxssl.fewshot.episodes import SuperpixelEpisodes
from voxssl.fewshot.model import ALPNet
from voxssl.training import optimizer_step

log = logging.getLogger(__name__)


def learning_rate(step: int, optim: OptimConfig) -> float:
    return optim.lr * optim.lr_step_gamma ** (step // optim.lr_step_every)


def make_optimiser(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "the few-shot model has no trainable parameter (LoRA disabled on a frozen encoder?)"
        )
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay
    )


def train_alpnet(
    model: ALPNet,
    episodes: SuperpixelEpisodes,
    config: FewShotConfig,
    weights_path: Path,
    rng: np.random.Generator,
    progress: Callable[[Iterable, int, int], Iterable] | None = None,
    extra: dict | None = None,
) -> dict[str, float]:
    """Train ``model`` for ``config.optim.steps`` episodes; write the weights to ``weights_path``.

    A ``<weights>.state.pt`` training state is saved every ``checkpoint_every`` steps and resumed
    from when present; it is deleted once the final weights are written.
    """
    optim = config.optim
    device = resolve_device(config.device, "fewshot.device")
    set_cpu_threads(device, config.cpu_threads)
    model.to(device).train()
    optimiser = make_optimiser(model, optim)
    state_path = Path(weights_path).with_suffix(".state.pt")
    start = 0
    if state_path.is_file():
        state = load_training_state(state_path)
        model.load_state_dict(state["model"], strict=False)
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["rng"]
        start = int(state["step"])
        log.info("resuming %s at step %d", weights_path.name, start)
    steps = range(start, optim.steps)
    iterator = progress(steps, start, optim.steps) if progress else steps
    running: dict[str, float] = {}
    began = time.perf_counter()
    for step in iterator:
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(step, optim)
        episode = episodes.sample(rng)
        tensors = [
            t.to(device)
            for t in (episode.support, episode.support_label, episode.query, episode.query_label)
        ]
        with autocast(device, config.amp_bf16, "fewshot.amp_bf16"):
            loss, parts = model.loss(*tensors)
        optimizer_step(loss, optimiser)
        for key, value in {"loss": float(loss.detach()), **parts}.items():
            running[key] = 0.98 * running.get(key, value) + 0.02 * value
        if (step + 1) % optim.log_every == 0:
            log.info(
                "step %d/%d %s lr %.2e",
                step + 1,
                optim.steps,
                " ".join(f"{k} {v:.4f}" for k, v in running.items()),
                learning_rate(step, optim),
            )
        if (
            optim.checkpoint_every
            and (step + 1) % optim.checkpoint_every == 0
            and step + 1 < optim.steps
        ):
            save_training_state(
                state_path, model, optimiser, step + 1, dict(rng.bit_generator.state)
            )
    elapsed = time.perf_counter() - began
    save_fewshot_weights(
        weights_path, model, config, extra={**(extra or {}), "steps": optim.steps, **running}
    )
    state_path.unlink(missing_ok=True)
    done = max(optim.steps - start, 0)
    return {**running, "episodes_per_s": done / elapsed if elapsed > 0 else 0.0}


__all__ = ["learning_rate", "make_optimiser", "train_alpnet"]
