"""Test-side restatement of the published checkpoints' parameter names and shapes, and a plain
functional forward pass over such a dict (no voxssl code), to check converters against.

The layout (vox2vec's FPN3d, also used by hierarchical-dense-ssl), ``c_i = base * 2**i``:
first_conv; per encoder level i < L-1 a stage ``left_blocks.i`` and ``down_blocks.i.1`` (1x1x1
c_i -> c_{i+1} after a ceil-mode max-pool); ``bottom_block``; per decoder index k (deepest first,
level i = L-2-k) ``up_blocks.k.0`` (1x1x1 c_{i+1} -> c_i, then nearest x2), ``skip_blocks.k``
(1x1x1 c_i -> c_i, added) and a stage ``right_blocks.k``. A stage ``P`` has blocks
``P.layers.j``; a block is BN (0), ReLU, conv3 (2), BN (3), ReLU, conv3 (5) plus identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def foreign_fpn_state(
    base: int = 4, levels: int = 3, blocks: int = 2, in_channels: int = 1, seed: int = 0
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    channels = [base * 2**i for i in range(levels)]
    state: dict[str, torch.Tensor] = {}

    def randn(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    def conv(prefix: str, c_out: int, c_in: int, k: int) -> None:  # activations stay O(1)
        state[f"{prefix}.weight"] = randn(c_out, c_in, k, k, k, scale=(c_in * k**3) ** -0.5)
        state[f"{prefix}.bias"] = randn(c_out, scale=0.05)

    def norm(prefix: str, c: int) -> None:
        state[f"{prefix}.weight"] = 1 + randn(c, scale=0.1)
        state[f"{prefix}.bias"] = randn(c, scale=0.1)
        state[f"{prefix}.running_mean"] = randn(c, scale=0.1)
        state[f"{prefix}.running_var"] = 0.5 + torch.rand(c, generator=gen)
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)

    def stage(prefix: str, c: int) -> None:
        for j in range(blocks):
            norm(f"{prefix}.layers.{j}.layers.0", c)
            conv(f"{prefix}.layers.{j}.layers.2", c, c, 3)
            norm(f"{prefix}.layers.{j}.layers.3", c)
            conv(f"{prefix}.layers.{j}.layers.5", c, c, 3)

    conv("first_conv", channels[0], in_channels, 3)
    for i in range(levels - 1):
        stage(f"left_blocks.{i}", channels[i])
        conv(f"down_blocks.{i}.1", channels[i + 1], channels[i], 1)
    stage("bottom_block", channels[-1])
    for k in range(levels - 1):
        i = levels - 2 - k
        conv(f"up_blocks.{k}.0", channels[i], channels[i + 1], 1)
        conv(f"skip_blocks.{k}", channels[i], channels[i], 1)
        stage(f"right_blocks.{k}", channels[i])
    return state


def reference_forward(
    state: dict[str, torch.Tensor], x: torch.Tensor, levels: int, blocks: int
) -> list[torch.Tensor]:
    """The pyramid (level 0 first) computed straight from the foreign tensors, BN in eval mode."""

    def conv(x: torch.Tensor, prefix: str) -> torch.Tensor:
        weight = state[f"{prefix}.weight"]
        return F.conv3d(x, weight, state[f"{prefix}.bias"], padding=weight.shape[-1] // 2)

    def norm(x: torch.Tensor, prefix: str) -> torch.Tensor:
        return F.batch_norm(
            x,
            state[f"{prefix}.running_mean"],
            state[f"{prefix}.running_var"],
            state[f"{prefix}.weight"],
            state[f"{prefix}.bias"],
            training=False,
            eps=1e-5,
        )

    def stage(x: torch.Tensor, prefix: str) -> torch.Tensor:
        for j in range(blocks):
            p = f"{prefix}.layers.{j}.layers"
            y = conv(F.relu(norm(x, f"{p}.0")), f"{p}.2")
            x = x + conv(F.relu(norm(y, f"{p}.3")), f"{p}.5")
        return x

    x = conv(x, "first_conv")
    skips = []
    for i in range(levels - 1):
        x = stage(x, f"left_blocks.{i}")
        skips.append(x)
        x = conv(F.max_pool3d(x, 2, ceil_mode=True), f"down_blocks.{i}.1")
    x = stage(x, "bottom_block")
    pyramid = [x]
    for k in range(levels - 1):
        skip = skips[levels - 2 - k]
        x = F.interpolate(conv(x, f"up_blocks.{k}.0"), scale_factor=2, mode="nearest")
        x = x[:, :, : skip.shape[2], : skip.shape[3], : skip.shape[4]]
        x = stage(x + conv(skip, f"skip_blocks.{k}"), f"right_blocks.{k}")
        pyramid.insert(0, x)
    return pyramid
