"""The TensorBoard picture of a pretraining view (``views/slice``): the middle z slice of view 1,
its reconstruction (when the model has a reconstruction head) and a PCA-to-RGB picture of its voxel
embeddings, side by side. The scalars and the progress bar: :class:`voxssl.training.RunLogger`."""

from __future__ import annotations

import torch


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


__all__ = ["pca_rgb", "slice_panel"]
