"""Test-time training (seed 000): adapt ALPNet to a query slice with its own prediction.

For a query slice: predict with the real support, then for ``steps`` SGD steps train on episodes
built from the slice and its prediction (support = slice and predicted mask; query = the same
augmentation applied to both), then predict again. ``reset`` restores the trained weights after
every slice (the published code), every scan, or never.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from voxssl.config.fewshot import TTTConfig
from voxssl.fewshot.augment import EpisodeAugment
from voxssl.fewshot.model import ALPNet
from voxssl.training import optimizer_step


class TestTimeTrainer:
    __test__ = False  # not a pytest class

    def __init__(self, model: ALPNet, config: TTTConfig, augment: EpisodeAugment) -> None:
        self.model = model
        self.config = config
        self.augment = augment
        self._saved = copy.deepcopy(self._trainable_state())

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def reset(self) -> None:
        """Restore the weights the trainer was created with."""
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if name in self._saved:
                    parameter.copy_(self._saved[name])

    def adapt(
        self, image: torch.Tensor, prediction: torch.Tensor, rng: np.random.Generator
    ) -> list[float]:
        """Train on (augmented slice, augmented prediction) pairs. image (1, 3, S, S); prediction (1, S, S) {0,1}.

        Returns the losses; no step is taken when the prediction is empty (nothing to segment) or the
        model has nothing trainable (a frozen encoder).
        """
        params = [p for p in self.model.parameters() if p.requires_grad]
        if int(prediction.sum()) == 0 or not params:
            return []
        optimiser = torch.optim.SGD(
            params,
            lr=self.config.lr,
            momentum=self.config.momentum,
            weight_decay=self.config.weight_decay,
        )
        was_training = self.model.training
        self.model.train()
        losses = []
        for _ in range(self.config.steps):
            height, width = image.shape[-2:]
            draw = self.augment.randomize(rng, (height, width))
            query, (query_label,) = self.augment.apply(
                draw, image[0], [prediction[0].to(torch.uint8)]
            )
            loss, _ = self.model.loss(
                image, prediction.to(torch.uint8), query[None], query_label[None]
            )
            optimizer_step(loss, optimiser)
            losses.append(float(loss.detach()))
        self.model.train(was_training)
        return losses


__all__ = ["TestTimeTrainer"]
