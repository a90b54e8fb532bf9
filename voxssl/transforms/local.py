"""The seed paper's local augmentations (Models Genesis style) on [0, 1]-scaled images:
local pixel shuffling, a non-linear intensity curve (random Bezier) and in-painting, in the order
and with the draws of the authors' code (hierarchical-dense-ssl ``AppearanceTransform``; see
:class:`voxssl.config.pretrain.LocalAugConfig` for every number and
tests/fixtures/parity/ for the measured agreement with that code).

Same contract as :mod:`voxssl.transforms.intensity`: ``randomize()`` draws from the transform's
own generator, ``__call__`` applies. Images are channel-first float32 ``(C, X, Y, Z)``; one draw
is shared by all channels.
"""

from __future__ import annotations

import numpy as np

from voxssl.config.pretrain import LocalAugConfig
from voxssl.transforms.intensity import RandomTransform

#: Samples of the Bezier curve (the authors' code: 100,000).
BEZIER_SAMPLES = 100_000
#: Look-up table nodes on [0, 1] (2^18 + 1): linear interpolation in the table agrees with
#: ``np.interp`` on the 100,000 curve samples to ~1e-7 (a few 1e-5 where the curve is almost
#: vertical), at a twentieth of its cost.
_LUT_SIZE = 262_145


def bezier_curve(
    points: np.ndarray, samples: int = BEZIER_SAMPLES, invert: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Bezier through 4 control points ``(4, 2)``, as a monotone look-up curve.

    The x and the y samples are sorted *independently* (the authors' code), which makes the map
    non-decreasing whatever the inner points; ``invert`` sorts y in decreasing order instead
    (Models Genesis' flipped curve). Returns ``(x, y)``, both ``(samples,)``.
    """
    t = np.linspace(0.0, 1.0, samples)
    u = 1.0 - t
    basis = (u * u * u, 3.0 * t * u * u, 3.0 * t * t * u, t * t * t)
    points = np.asarray(points, dtype=np.float64)
    xs = sum(b * p for b, p in zip(basis, points[:, 0], strict=True))
    ys = sum(b * p for b, p in zip(basis, points[:, 1], strict=True))
    ys = np.sort(ys)
    return np.sort(xs), ys[::-1].copy() if invert else ys


class RandBezierIntensity(RandomTransform):
    """A random Bezier intensity curve from (0, 0) to (1, 1) (two inner points U(0, 1)^2),
    applied as a look-up curve with probability ``prob``; inverted with ``invert_prob``."""

    def __init__(self, prob: float, invert_prob: float = 0.0) -> None:
        super().__init__()
        self.prob = prob
        self.invert_prob = invert_prob
        self.curve: tuple[np.ndarray, np.ndarray] | None = None

    def randomize(self, img: np.ndarray) -> None:
        self.curve = None
        if self.rng.random() >= self.prob:
            return
        inner = self.rng.random((2, 2))
        invert = self.invert_prob > 0 and self.rng.random() < self.invert_prob
        self.set_points(np.array([[0.0, 0.0], inner[0], inner[1], [1.0, 1.0]]), invert)

    def set_points(self, points: np.ndarray, invert: bool = False) -> None:
        """Use the curve of these control points (what ``randomize`` draws)."""
        self.curve = bezier_curve(points, invert=invert)

    def apply(self, img: np.ndarray) -> np.ndarray:
        """The curve tabulated on a regular grid of [0, 1] and interpolated linearly."""
        if self.curve is None:
            return img
        xs, ys = self.curve
        table = np.interp(np.linspace(0.0, 1.0, _LUT_SIZE), xs, ys).astype(np.float32)
        position = np.clip(img, 0.0, 1.0, dtype=np.float32) * np.float32(_LUT_SIZE - 1)
        index = np.minimum(position.astype(np.int32), _LUT_SIZE - 2)
        fraction = position - index.astype(np.float32)
        low = table[index]
        return low + fraction * (table[index + 1] - low)


class RandLocalPixelShuffle(RandomTransform):
    """Permute the voxels inside ``num_blocks`` small random blocks (side ``floor(n * fraction)``,
    at least 1; origins uniform in ``[0, n - side)``).

    Every block is read from the input and the blocks are written back in draw order, so where
    two overlap the later one wins (the authors' code). ``permutation: shared`` applies one
    permutation of the in-block positions to every block (the authors' vectorised code);
    ``per_block`` draws one per block (the Models Genesis loop).
    """

    def __init__(
        self, prob: float, num_blocks: int, block_fraction: float, permutation: str = "shared"
    ) -> None:
        super().__init__()
        if permutation not in ("shared", "per_block"):
            raise ValueError(f"permutation must be shared or per_block, got {permutation!r}")
        self.prob, self.num_blocks, self.block_fraction = prob, num_blocks, block_fraction
        self.permutation = permutation
        self.flat_index: np.ndarray | None = None
        self.permuted_index: np.ndarray | None = None

    def block_shape(self, spatial: np.ndarray) -> np.ndarray:
        return np.maximum(1, np.floor(spatial * self.block_fraction + 1e-9).astype(int))

    def randomize(self, img: np.ndarray) -> None:
        self.flat_index = None
        if self.rng.random() >= self.prob or self.num_blocks == 0:
            return
        spatial = np.array(img.shape[1:])
        block = self.block_shape(spatial)
        if int(np.prod(block)) == 1:
            return
        origins = self.rng.integers(0, np.maximum(1, spatial - block), size=(self.num_blocks, 3))
        size = int(np.prod(block))
        if self.permutation == "shared":
            order = np.broadcast_to(self.rng.permutation(size), (self.num_blocks, size))
        else:
            order = np.argsort(self.rng.random((self.num_blocks, size)), axis=1)
        self.set_blocks(origins, block, order, spatial)

    def set_blocks(
        self, origins: np.ndarray, block: np.ndarray, order: np.ndarray, spatial: np.ndarray
    ) -> None:
        """Blocks at ``origins`` (B, 3) of shape ``block``; block b's voxel j takes the value of
        its voxel ``order[b, j]`` (C-order within the block)."""
        offsets = np.stack(np.meshgrid(*[np.arange(b) for b in block], indexing="ij"), -1)
        coords = origins[:, None, :] + offsets.reshape(1, -1, 3)  # (blocks, voxels per block, 3)
        flat = np.ravel_multi_index(tuple(np.moveaxis(coords, -1, 0)), tuple(spatial))
        source = np.take_along_axis(flat, np.asarray(order), axis=1).reshape(-1)
        flat = flat.reshape(-1)
        # Later blocks overwrite earlier ones: keep the last write of every voxel.
        _, last = np.unique(flat[::-1], return_index=True)
        keep = flat.size - 1 - last
        self.flat_index, self.permuted_index = flat[keep], source[keep]

    def apply(self, img: np.ndarray) -> np.ndarray:
        if self.flat_index is None:
            return img
        out = img.reshape(img.shape[0], -1).copy()
        out[:, self.flat_index] = img.reshape(img.shape[0], -1)[:, self.permuted_index]
        return out.reshape(img.shape)


class RandInPainting(RandomTransform):
    """Fill random boxes with U(0, 1) noise: while fewer than ``max_boxes`` boxes and
    U(0, 1) < ``continue_prob``, add a box of side ``randint(floor(lo n), floor(hi n))`` starting
    at ``randint(margin, n - side - margin)`` per axis (the authors' loop; the margin shrinks on
    patches too small for it). The whole loop runs with probability ``prob``."""

    def __init__(
        self,
        prob: float,
        max_boxes: int,
        continue_prob: float,
        size_fraction: tuple[float, float],
        margin: int = 3,
    ) -> None:
        super().__init__()
        self.prob, self.max_boxes, self.continue_prob = prob, max_boxes, continue_prob
        self.size_fraction, self.margin = size_fraction, margin
        self.boxes: list[tuple[tuple[int, ...], tuple[int, ...], np.ndarray]] = []

    def _box(self, spatial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low = np.floor(spatial * self.size_fraction[0] + 1e-9).astype(int)
        high = np.maximum(np.floor(spatial * self.size_fraction[1] + 1e-9).astype(int), low + 1)
        size = np.clip(self.rng.integers(low, high), 1, spatial)
        margin = np.minimum(self.margin, np.maximum(0, (spatial - size) // 2))
        start = self.rng.integers(margin, np.maximum(margin + 1, spatial - size - margin))
        return start, size

    def randomize(self, img: np.ndarray) -> None:
        self.boxes = []
        if self.max_boxes == 0 or self.rng.random() >= self.prob:
            return
        spatial = np.array(img.shape[1:])
        while len(self.boxes) < self.max_boxes and self.rng.random() < self.continue_prob:
            start, size = self._box(spatial)
            fill = self.rng.random((img.shape[0], *size), dtype=np.float32)
            self.boxes.append((tuple(int(s) for s in start), tuple(int(s) for s in size), fill))

    def apply(self, img: np.ndarray) -> np.ndarray:
        if not self.boxes:
            return img
        out = img.copy()
        for (x, y, z), (sx, sy, sz), fill in self.boxes:
            out[:, x : x + sx, y : y + sy, z : z + sz] = fill
        return out


def build_local_augmentations(cfg: LocalAugConfig) -> list[RandomTransform]:
    """The authors' order: local shuffling, non-linear intensity, in-painting (shuffling and a
    point-wise curve commute, so only the random draws depend on the order of the first two)."""
    if not cfg.enabled:
        return []
    return [
        RandLocalPixelShuffle(
            cfg.shuffle_prob,
            cfg.shuffle_blocks,
            cfg.shuffle_block_fraction,
            cfg.shuffle_permutation,
        ),
        RandBezierIntensity(cfg.nonlinear_prob, cfg.nonlinear_invert_prob),
        RandInPainting(
            cfg.inpaint_prob,
            cfg.inpaint_max_boxes,
            cfg.inpaint_continue_prob,
            cfg.inpaint_size_fraction,
            cfg.inpaint_margin,
        ),
    ]


__all__ = [
    "BEZIER_SAMPLES",
    "RandBezierIntensity",
    "RandInPainting",
    "RandLocalPixelShuffle",
    "bezier_curve",
    "build_local_augmentations",
]
