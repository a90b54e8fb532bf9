"""Image formation: per-patient tissue intensities, texture, partial volume, noise, bias field.

Intensities are drawn per patient so that organs overlap *across and within* patients, as in real
scans: in CT the contrast phase (native ... portal venous) moves liver, spleen, pancreas and
kidneys by tens of HU while muscle barely changes; in MR the sequence (T1- or T2-weighted), the
scanner gain and a smooth bias field change everything. Liver vs spleen vs pancreas vs muscle can
therefore not be told apart by intensity alone; a model has to use shape and context.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxssl.data.phantoms.anatomy import Structure
from voxssl.data.phantoms.grid import PhantomGrid, smooth_noise


@dataclass(frozen=True)
class CTTissue:
    """HU without contrast, extra HU at portal-venous peak, patient-to-patient SD, texture SDs."""

    native: float
    enhancement: float
    jitter: float
    fine_texture: float
    coarse_texture: float


@dataclass(frozen=True)
class MRTissue:
    """Relative signal on T1- and T2-weighted images (fat ~ 1 on T1); texture as fractions of it."""

    t1: float
    t2: float
    fine_texture: float = 0.05
    coarse_texture: float = 0.04


CT_TISSUES: dict[str, CTTissue] = {
    "air": CTTissue(-1000, 0, 4, 0, 0),
    "table": CTTissue(-150, 0, 80, 20, 0),
    "fat": CTTissue(-100, 0, 12, 10, 8),
    "muscle": CTTissue(50, 12, 7, 9, 5),
    "bowel": CTTissue(30, 45, 15, 18, 14),
    "liver": CTTissue(58, 55, 8, 7, 6),
    "liver_vessel": CTTissue(40, 115, 10, 5, 0),
    "spleen": CTTissue(48, 70, 8, 6, 9),
    "kidney": CTTissue(32, 150, 15, 10, 16),
    "bile": CTTissue(8, 0, 6, 4, 2),
    "stomach_wall": CTTissue(40, 60, 10, 6, 4),
    "stomach_fluid": CTTissue(15, 0, 12, 8, 8),
    "pancreas": CTTissue(42, 60, 10, 14, 8),
    "aorta": CTTissue(42, 150, 15, 4, 0),
    "ivc": CTTissue(42, 110, 15, 6, 3),
    "bone_cortical": CTTissue(650, 0, 100, 40, 0),
    "bone_cancellous": CTTissue(220, 0, 50, 25, 15),
    "disc": CTTissue(85, 0, 10, 6, 0),
    "csf": CTTissue(10, 0, 5, 5, 0),
}

MR_TISSUES: dict[str, MRTissue] = {
    "air": MRTissue(0.0, 0.0, 0.0, 0.0),
    "table": MRTissue(0.0, 0.0, 0.0, 0.0),
    "fat": MRTissue(1.00, 0.70),
    "muscle": MRTissue(0.32, 0.20),
    "bowel": MRTissue(0.28, 0.40, 0.10, 0.10),
    "liver": MRTissue(0.50, 0.27),
    "liver_vessel": MRTissue(0.18, 0.12),
    "spleen": MRTissue(0.38, 0.55),
    "kidney": MRTissue(0.40, 0.62, 0.06, 0.08),
    "bile": MRTissue(0.14, 1.15, 0.03, 0.02),
    "stomach_wall": MRTissue(0.36, 0.32),
    "stomach_fluid": MRTissue(0.12, 1.10),
    "pancreas": MRTissue(0.55, 0.35, 0.08, 0.05),
    "aorta": MRTissue(0.12, 0.08),
    "ivc": MRTissue(0.16, 0.10),
    "bone_cortical": MRTissue(0.06, 0.05, 0.02, 0.0),
    "bone_cancellous": MRTissue(0.62, 0.48),
    "disc": MRTissue(0.28, 0.75),
    "csf": MRTissue(0.10, 1.20),
}

#: Signal of fat on the MR intensity scale before the random scanner gain.
MR_FULL_SCALE = 1000.0
#: CT values outside the scanner's reconstruction circle (a common padding value).
CT_PADDING_HU = -1024.0


@dataclass
class Appearance:
    """One patient's imaging: per-tissue mean and texture amplitudes plus acquisition settings."""

    modality: str
    mean: dict[str, float]
    fine_texture: dict[str, float]
    coarse_texture: dict[str, float]
    noise_sigma: float
    settings: dict[str, float | str]


def sample_appearance(modality: str, rng: np.random.Generator) -> Appearance:
    """One patient's contrast (CT phase or MR weighting), tissue levels, texture and noise."""
    if modality == "ct":
        phase = float(rng.uniform(0.0, 1.0))  # 0: native, 1: portal-venous peak
        mean = {
            k: t.native + phase * t.enhancement + t.jitter * float(rng.normal())
            for k, t in CT_TISSUES.items()
        }
        mean["air"] = -1000.0
        fine = {k: t.fine_texture * float(rng.uniform(0.6, 1.4)) for k, t in CT_TISSUES.items()}
        coarse = {k: t.coarse_texture * float(rng.uniform(0.6, 1.4)) for k, t in CT_TISSUES.items()}
        sigma = float(rng.uniform(6.0, 25.0))
        return Appearance(
            "ct", mean, fine, coarse, sigma, {"contrast_phase": phase, "noise_hu": sigma}
        )
    sequence = "t1" if rng.random() < 0.5 else "t2"
    gain = MR_FULL_SCALE * float(rng.uniform(0.6, 1.6))
    mean, fine, coarse = {}, {}, {}
    for name, tissue in MR_TISSUES.items():
        level = (
            (tissue.t1 if sequence == "t1" else tissue.t2)
            * gain
            * float(np.exp(rng.normal(0.0, 0.12)))
        )
        mean[name] = level
        fine[name] = tissue.fine_texture * level * float(rng.uniform(0.6, 1.4))
        coarse[name] = tissue.coarse_texture * level * float(rng.uniform(0.6, 1.4))
    sigma = gain * float(rng.uniform(0.01, 0.04))
    settings: dict[str, float | str] = {
        "sequence": sequence,
        "gain": gain,
        "bias_strength": float(rng.uniform(0.1, 0.35)),
        "noise": sigma,
    }
    return Appearance("mr", mean, fine, coarse, sigma, settings)


def paint(
    grid: PhantomGrid, structures: list[Structure], appearance: Appearance
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Composite the structures: mean image, tissue-index map (into ``tissues``) and label map.

    Each structure covers a voxel with the fraction ``alpha`` of a linear ramp across its surface,
    one voxel wide along the surface normal (a slice thick where the surface runs along the slices),
    so boundary voxels mix the two tissues (partial volume) while the label and the tissue index
    take the structure on whose side of the surface the voxel centre lies.
    """
    tissues = sorted(appearance.mean)
    mean = np.full(grid.shape, appearance.mean["air"], dtype=np.float32)
    tissue = np.full(grid.shape, tissues.index("air"), dtype=np.uint8)
    label = np.zeros(grid.shape, dtype=np.uint8)
    # Blocks entirely inside or outside a structure are filled or skipped without interpolation.
    # (A voxel is at most sum(spacing) wide across any surface.)
    block, half_width = grid.block_size(), 0.5 * float(sum(grid.spacing))
    for structure in structures:
        value = np.float32(appearance.mean[structure.tissue])
        index = tissues.index(structure.tissue)
        for data, start, fine in grid.blocks(structure.box, block):
            coarse = structure.distance[data]
            if coarse.min() >= half_width:
                continue  # entirely outside
            if coarse.max() < -half_width:  # entirely inside: interpolation cannot leave [min, max]
                mean[fine] = value
                tissue[fine] = index
                if structure.label is not None:
                    label[fine] = structure.label
                continue
            distance = grid.upsample_block(grid.in_voxel_widths(coarse), start, fine)
            inside = distance < 0
            tissue[fine][inside] = index
            if structure.label is not None:
                label[fine][inside] = structure.label
            # new = value + (1 - alpha) * (old - value), with 1 - alpha = clip(0.5 + d, 0, 1) (d in
            # voxel widths); in place: these blocks are most of the work for large grids
            keep = (
                distance if distance.base is None and distance.flags.writeable else distance.copy()
            )
            keep += np.float32(0.5)
            np.clip(keep, 0.0, 1.0, out=keep)
            region = mean[fine]
            region -= value
            region *= keep
            region += value
    return mean, tissue, tissues, label


def add_texture(
    grid: PhantomGrid,
    image: np.ndarray,
    tissue: np.ndarray,
    tissues: list[str],
    appearance: Appearance,
    rng: np.random.Generator,
) -> None:
    """Add per-tissue correlated texture in place.

    Fine grain is one field scaled per tissue. The coarse (mottling) texture mixes two independent
    fields at a random angle per tissue, so that neighbouring organs get different patterns rather
    than one pattern at different strengths.
    """
    fine_lut = np.array([appearance.fine_texture[t] for t in tissues], dtype=np.float32)
    texture = grid.fine_noise(rng, max(2.5, 1.2 * min(grid.spacing)))
    texture *= fine_lut[tissue]
    image += texture
    angle = rng.uniform(0.0, 2.0 * np.pi, size=len(tissues))
    coarse_lut = np.array([appearance.coarse_texture[t] for t in tissues], dtype=np.float32)
    for weight in (np.cos(angle), np.sin(angle)):
        texture = grid.fine_noise(rng, float(rng.uniform(6.0, 10.0)))
        texture *= (coarse_lut * weight.astype(np.float32))[tissue]
        image += texture


def render(
    grid: PhantomGrid, structures: list[Structure], appearance: Appearance, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The final image (float32, HU for CT) and label (uint8) on the fine grid."""
    mean, tissue, tissues, label = paint(grid, structures, appearance)
    add_texture(grid, mean, tissue, tissues, appearance, rng)
    del tissue
    fine_axes = tuple(grid.fine_axis_mm(a) for a in range(2))
    if appearance.modality == "ct":
        noise = rng.standard_normal(grid.shape, dtype=np.float32)
        noise *= np.float32(appearance.noise_sigma)
        mean += noise
        del noise
        x, y = np.meshgrid(fine_axes[0], fine_axes[1], indexing="ij")
        outside = np.hypot(x, y) > max(grid.extent_mm[:2]) / 2.0  # square reconstruction FOV
        mean[outside] = CT_PADDING_HU
        np.clip(mean, CT_PADDING_HU, 3071.0, out=mean)
        return mean, label
    bias_axes = tuple(ax for ax in grid.coarse_axes)
    strength = float(appearance.settings["bias_strength"])
    bias = np.exp(strength * smooth_noise(rng, bias_axes, 150.0))
    mean *= grid.upsample(bias.astype(np.float32), grid.full_box())
    np.maximum(mean, 0.0, out=mean)
    real = mean + appearance.noise_sigma * rng.standard_normal(grid.shape, dtype=np.float32)
    imag = appearance.noise_sigma * rng.standard_normal(grid.shape, dtype=np.float32)
    return np.hypot(real, imag, out=real), label  # magnitude image: Rician noise
