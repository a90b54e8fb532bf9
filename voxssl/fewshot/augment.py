"""The SSL-ALPNet episode augmentation, applied jointly to a slice and its mask.

Geometry: affine (rotation, shear, isotropic scale, shift; no flips) followed by an elastic
displacement (Simard et al.: uniform noise in [-1, 1] smoothed by a Gaussian of ``sigma`` px and
scaled by ``alpha`` px). The image is sampled bilinearly, the mask with nearest neighbours, on the
same grid. Intensity: MONAI ``AdjustContrast`` (gamma on the min-max normalised slice).

``randomize`` draws every parameter from a numpy Generator; ``apply`` is deterministic, so the
same draw can be reused for a slice, its mask and (in TTT) a prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from voxssl.config.fewshot import AugmentConfig


@dataclass
class AugmentDraw:
    matrix: np.ndarray  # (3, 3) output pixel (centred) -> input pixel (centred)
    displacement: np.ndarray  # (2, H, W) pixels, added to output coordinates before the affine
    gamma: float


class EpisodeAugment:
    def __init__(self, config: AugmentConfig) -> None:
        self.config = config

    def randomize(self, rng: np.random.Generator, size: tuple[int, int]) -> AugmentDraw:
        from monai.transforms.utils import (
            create_rotate,
            create_scale,
            create_shear,
            create_translate,
        )

        c = self.config
        angle = math.radians(rng.uniform(-c.rotate_deg, c.rotate_deg))
        shear = math.tan(math.radians(rng.uniform(-c.shear_deg, c.shear_deg)))
        scale = rng.uniform(*c.scale)
        shift = rng.uniform(-c.shift_px, c.shift_px, size=2)
        forward = (
            np.asarray(create_translate(2, shift.tolist()))
            @ np.asarray(create_rotate(2, angle))
            @ np.asarray(create_shear(2, (shear, 0.0)))
            @ np.asarray(create_scale(2, [scale, scale]))
        )
        displacement = np.stack(
            [
                gaussian_filter(rng.uniform(-1.0, 1.0, size=size), c.elastic_sigma, mode="constant")
                * c.elastic_alpha
                for _ in range(2)
            ]
        )
        gamma = float(rng.uniform(*c.gamma))
        return AugmentDraw(matrix=np.linalg.inv(forward), displacement=displacement, gamma=gamma)

    @staticmethod
    def sampling_grid(draw: AugmentDraw, size: tuple[int, int]) -> torch.Tensor:
        """grid_sample grid (1, H, W, 2) for output pixels, align_corners=True."""
        h, w = size
        ys, xs = np.meshgrid(
            np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij"
        )
        centre = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
        out = np.stack(
            [ys + draw.displacement[0] - centre[0], xs + draw.displacement[1] - centre[1]]
        )
        coords = np.einsum("ij,jhw->ihw", draw.matrix[:2, :2], out) + draw.matrix[:2, 2, None, None]
        src_y = (coords[0] + centre[0]) / max(h - 1, 1) * 2 - 1
        src_x = (coords[1] + centre[1]) / max(w - 1, 1) * 2 - 1
        return torch.from_numpy(np.stack([src_x, src_y], axis=-1)[None]).float()

    def apply(
        self, draw: AugmentDraw, image: torch.Tensor, masks: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """image (C, H, W) float; masks (H, W) integer maps (0 outside the field of view)."""
        from monai.transforms import AdjustContrast

        height, width = image.shape[-2:]
        grid = self.sampling_grid(draw, (height, width)).to(image.device)
        warped = F.grid_sample(
            image[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=True
        )[0]
        warped = torch.as_tensor(AdjustContrast(gamma=draw.gamma)(warped))
        out_masks = []
        for mask in masks:
            m = F.grid_sample(
                mask[None, None].float(),
                grid,
                mode="nearest",
                padding_mode="zeros",
                align_corners=True,
            )
            out_masks.append(m[0, 0].round().to(mask.dtype))
        if hasattr(warped, "as_tensor"):  # MONAI MetaTensor -> plain tensor
            warped = warped.as_tensor()
        return warped, out_masks


__all__ = ["AugmentDraw", "EpisodeAugment"]
