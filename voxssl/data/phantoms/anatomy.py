"""Procedural abdominal anatomy: one random patient as a list of painted structures.

Every structure is an approximate signed distance field (mm, negative inside) over a box of the
coarse grid. Structures are painted in list order, later ones over earlier ones, so the order
encodes anatomical precedence (vessels over pancreas over fat ...). Appearance-only structures
(``label=None``: liver vessels, stomach gas, bone marrow) change the image but not the label.

Placement follows the body frame (+x patient left, +y anterior, +z superior; mirrored in x to RAS at the end of generation) and is anchored
on the spine: the vertebral body sits at the posterior midline, the aorta left-anterior of it, the
IVC to its right, the kidneys posterolateral, liver right-upper with the gallbladder under it,
spleen left-posterior, stomach left-anterior, pancreas across the midline anterior to the great
vessels. Ranges are chosen to match typical adult sizes (liver ~1.2-2 L, gallbladder ~20-60 ml,
spleen ~0.1-0.4 L, kidneys ~0.12-0.25 L each), not fitted to any data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxssl.data.phantoms.grid import Box, PhantomGrid, smooth_noise, three
from voxssl.data.phantoms.shapes import (
    as_distance,
    ellipsoid,
    elliptic_cylinder,
    polyline_tube,
    rotation,
    smooth_union,
)
from voxssl.vocabulary import ORGAN_IDS

#: The canonical organs every phantom draws (id -> name).
PHANTOM_ORGANS: dict[int, str] = {
    ORGAN_IDS[name]: name
    for name in (
        "spleen",
        "right_kidney",
        "left_kidney",
        "gallbladder",
        "liver",
        "stomach",
        "aorta",
        "inferior_vena_cava",
        "pancreas",
        "vertebrae",
        "body_wall_muscle",
        "fat",
    )
}


@dataclass
class Structure:
    """One painted region: ``distance`` (mm, <0 inside) over the coarse ``box``."""

    name: str
    tissue: str
    label: int | None
    box: Box
    distance: np.ndarray


class _Builder:
    """Samples one patient; each ``_add_*`` method draws one anatomical region."""

    def __init__(self, grid: PhantomGrid, rng: np.random.Generator):
        self.grid = grid
        self.rng = rng
        self.structures: list[Structure] = []
        self.params: dict[str, float] = {}
        #: Anatomical points in the shape frame (deformed body-frame mm), by name; see landmarks.py.
        self.points: dict[str, tuple[float, float, float]] = {}

    # --- helpers -----------------------------------------------------------------------------
    def u(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def box(self, center, half) -> Box | None:
        margin = 3.0 * self.params["deformation_mm"] + 15.0
        low = [c - h - margin for c, h in zip(center, half, strict=True)]
        high = [c + h + margin for c, h in zip(center, half, strict=True)]
        return self.grid.box(low, high)

    def noise(self, box: Box, corr_mm: float) -> np.ndarray:
        x, y, z = self.grid.axes(box)
        return smooth_noise(self.rng, (x, y, z), corr_mm)

    def add(
        self, name: str, tissue: str, label: int | None, box: Box, distance: np.ndarray
    ) -> None:
        self.structures.append(
            Structure(name, tissue, label, box, distance.astype(np.float32, copy=False))
        )

    def inside_cavity(self, box: Box, distance: np.ndarray) -> np.ndarray:
        return np.maximum(distance, self.cavity[box])

    def organ(
        self, name: str, box: Box | None, level_set_fn, noise_mm: float, corr_mm: float = 40.0
    ):
        """Distance field of an organ: level set -> distance, bumpy surface, kept inside the cavity."""
        if box is None:
            return None
        distance = as_distance(self.grid, level_set_fn(self.grid.coords(box)))
        distance += noise_mm * self.noise(box, corr_mm)
        return self.inside_cavity(box, distance)

    # --- regions ------------------------------------------------------------------------------
    def deformation(self) -> None:
        amplitude = self.u(2.0, 8.0)
        self.params["deformation_mm"] = amplitude
        full = self.grid.full_box()
        self.grid.deform(three(amplitude * self.noise(full, 80.0) for _ in range(3)))

    def body(self, with_table: bool) -> None:
        full = self.grid.full_box()
        scale = self.u(0.85, 1.12)
        half_width, anterior, posterior = (
            160.0 * scale * self.u(0.9, 1.1),
            115.0 * scale,
            105.0 * scale,
        )
        cx, cy = self.rng.normal(0.0, 6.0), self.rng.normal(0.0, 8.0)
        fat, muscle = self.u(6.0, 35.0), self.u(7.0, 15.0)
        taper = self.u(-0.08, 0.08)  # the body widens or narrows towards the pelvis
        power = self.u(2.0, 2.6)
        self.params.update(
            body_half_width_mm=half_width, subcutaneous_fat_mm=fat, organ_scale=self.u(0.88, 1.12)
        )

        x, y, z = self.grid.coords(full)
        widen = 1.0 + taper * z / 200.0
        radius_y = np.where(y > cy, anterior, posterior) * widen
        body = as_distance(
            self.grid, elliptic_cylinder((x, y, z), (cx, cy), (half_width * widen, radius_y), power)
        )
        body += 4.0 * self.noise(full, 50.0)
        fat_field = np.clip(fat * (1.0 + 0.3 * self.noise(full, 60.0)), 3.0, None)
        wall = body + fat_field
        self.cavity = wall + muscle * (1.0 + 0.2 * self.noise(full, 40.0))
        self.body_center = (cx, cy)
        self.cavity_half = (
            half_width - fat - muscle,
            anterior - fat - muscle,
            posterior - fat - muscle,
        )
        # The vertebral body sits ~60-75 mm (paraspinal muscles, canal) in front of the posterior wall.
        self.spine_y = cy - posterior + fat + self.u(58.0, 72.0)
        self.spine_x = cx + self.rng.normal(0.0, 3.0)

        if with_table:  # CT couch: a curved slab under the patient, separated by a small air gap
            top = cy - posterior - self.u(6.0, 20.0)
            extent = self.grid.extent_mm
            box = self.box((0.0, top + 10.0, 0.0), (extent[0], 30.0, extent[2]))
            if box is not None:
                tx, ty, _ = self.grid.coords(box)
                table = np.maximum(top - 8.0 - ty + 0.0004 * tx**2, ty - 0.0004 * tx**2 - top)
                self.add("table", "table", 0, box, table)
        self.add("body", "fat", ORGAN_IDS["fat"], full, body)
        self.add("body_wall", "muscle", ORGAN_IDS["body_wall_muscle"], full, wall)
        self.add("visceral_fat", "fat", ORGAN_IDS["fat"], full, self.cavity)

    def bowel(self) -> None:
        full = self.grid.full_box()
        loops = as_distance(self.grid, self.u(-0.4, 0.5) - self.noise(full, self.u(18.0, 30.0)))
        loops = np.maximum(loops, self.cavity + 2.0)
        gas = as_distance(self.grid, self.u(1.0, 1.6) - self.noise(full, 10.0))
        self.add("bowel", "bowel", 0, full, loops)
        self.add("bowel_gas", "air", None, full, np.maximum(gas, loops + 2.0))

    def liver(self) -> None:
        s = self.params["organ_scale"]
        cx, cy = self.body_center
        wx, wa, _ = self.cavity_half
        z0 = self.u(35.0, 60.0)
        self.liver_z = z0
        right = (
            (cx - self.u(0.35, 0.45) * wx, cy + self.u(-0.1, 0.1) * wa, z0),
            [self.u(70, 90) * s, self.u(75, 95) * s, self.u(70, 88) * s],
        )
        left = (
            (cx + self.u(-0.05, 0.15) * wx, cy + self.u(0.35, 0.5) * wa, z0 + self.u(5, 20)),
            [self.u(50, 75) * s, self.u(25, 40) * s, self.u(35, 50) * s],
        )
        rot_r, rot_l = rotation(self.u(-15, 15)), rotation(self.u(-20, 0))
        box = self.box((cx - 0.2 * wx, cy, z0), (wx, wa + 40, 110 * s))

        def level_set(c):
            return smooth_union(
                as_distance(self.grid, ellipsoid(c, right[0], right[1], rot_r)),
                as_distance(self.grid, ellipsoid(c, left[0], left[1], rot_l)),
                20.0,
            )

        distance = self.organ("liver", box, level_set, self.u(4.0, 8.0))
        if box is None or distance is None:
            return
        self.add("liver", "liver", ORGAN_IDS["liver"], box, distance)
        radius = self.u(0.15, 0.25)
        tree = np.hypot(self.noise(box, self.u(12, 18)), self.noise(box, self.u(12, 18))) - radius
        vessels = np.maximum(as_distance(self.grid, tree), distance + 3.0)
        self.add("liver_vessels", "liver_vessel", None, box, vessels)
        self.gallbladder(right[0], right[1])

    def gallbladder(self, lobe_center, lobe_radii) -> None:
        """Pear-shaped, in its fossa on the inferior-anterior surface of the right lobe."""
        s = self.params["organ_scale"]
        center = (
            lobe_center[0] + self.u(0.35, 0.55) * lobe_radii[0],
            lobe_center[1] + self.u(0.35, 0.55) * lobe_radii[1],
            lobe_center[2] - self.u(0.45, 0.65) * lobe_radii[2],
        )
        radii = (self.u(14, 20) * s, self.u(15, 21) * s, self.u(32, 45) * s)
        rot = rotation(self.u(-20, 20), self.u(20, 45))
        box = self.box(center, (radii[2],) * 3)
        distance = self.organ(
            "gallbladder", box, lambda c: ellipsoid(c, center, radii, rot), 1.5, corr_mm=25.0
        )
        if box is not None and distance is not None:
            self.add("gallbladder", "bile", ORGAN_IDS["gallbladder"], box, distance)

    def spleen(self) -> None:
        s = self.params["organ_scale"]
        wx = self.cavity_half[0]
        center = (
            self.body_center[0] + self.u(0.55, 0.7) * wx,
            self.spine_y + self.u(-10, 15),
            self.liver_z + self.u(-5, 15),
        )
        radii = (self.u(18, 26) * s, self.u(45, 60) * s, self.u(40, 58) * s)
        rot = rotation(self.u(-55, -30))
        self.spleen_center = center
        box = self.box(center, (65 * s,) * 3)
        distance = self.organ(
            "spleen", box, lambda c: ellipsoid(c, center, radii, rot), self.u(3.0, 6.0)
        )
        if box is not None and distance is not None:
            self.add("spleen", "spleen", ORGAN_IDS["spleen"], box, distance)

    def stomach(self) -> None:
        s = self.params["organ_scale"] * self.u(0.75, 1.2)  # distension
        cx, cy = self.body_center
        wx, wa, _ = self.cavity_half
        center = (
            cx + self.u(0.2, 0.4) * wx,
            cy + self.u(0.15, 0.35) * wa,
            self.liver_z + self.u(10, 25),
        )
        radii = (self.u(40, 55) * s, self.u(30, 45) * s, self.u(45, 60) * s)
        rot = rotation(self.u(20, 45), self.u(-10, 10))
        box = self.box(center, (70 * s,) * 3)
        distance = self.organ(
            "stomach", box, lambda c: ellipsoid(c, center, radii, rot), self.u(3.0, 7.0)
        )
        if box is None or distance is None:
            return
        wall = self.u(3.0, 6.0)
        self.add("stomach", "stomach_wall", ORGAN_IDS["stomach"], box, distance)
        self.add("stomach_contents", "stomach_fluid", None, box, distance + wall)
        if self.rng.random() < 0.85:  # supine patient: the gas cap is anterior
            level = center[1] + self.u(-0.2, 0.6) * radii[1]
            y = self.grid.coords(box)[1]
            self.add("stomach_gas", "air", None, box, np.maximum(distance + wall, level - y))

    def back_muscles(self) -> None:
        canal_y = self.spine_y - 28.0
        for side in (-1.0, 1.0):
            center = (self.spine_x + side * self.u(30, 38), canal_y - self.u(10, 20))
            radii = (self.u(24, 32), self.u(22, 28))
            box = self.box((*center, 0.0), (40.0, 40.0, 1e4))
            if box is None:
                continue
            coords = self.grid.coords(box)
            muscle = as_distance(
                self.grid, elliptic_cylinder(coords, center, radii, 2.4)
            ) + 2.0 * self.noise(box, 30.0)
            self.add("paraspinal", "muscle", ORGAN_IDS["body_wall_muscle"], box, muscle)
            # psoas: appears below the kidneys' upper poles and thickens towards the pelvis
            start = self.kidney_z + self.u(10, 30)
            box = self.box((self.spine_x + side * 45, self.spine_y, 0.0), (40.0, 40.0, 1e4))
            if box is None:
                continue
            x, y, z = self.grid.coords(box)
            depth = np.clip(start - z, 0.0, None)
            radius = np.minimum(4.0 + 0.22 * depth, self.u(18, 26))
            px = self.spine_x + side * (26.0 + 0.1 * depth)
            psoas = np.hypot(x - px, (y - self.spine_y) * 1.1) - radius
            self.add(
                "psoas",
                "muscle",
                ORGAN_IDS["body_wall_muscle"],
                box,
                psoas + 1.5 * self.noise(box, 25.0),
            )

    def kidneys(self) -> None:
        s = self.params["organ_scale"]
        left_z = self.liver_z - self.u(45, 65)
        self.kidney_z = left_z
        for name, side, z0 in (
            ("right_kidney", -1.0, left_z - self.u(5, 20)),
            ("left_kidney", 1.0, left_z),
        ):
            center = (self.spine_x + side * self.u(58, 72), self.spine_y + self.u(-15, 5), z0)
            radii = (self.u(22, 28) * s, self.u(26, 34) * s, self.u(48, 60) * s)
            rot = rotation(-side * self.u(20, 40), self.u(-10, 10), -side * self.u(8, 18))
            sinus_offset = rot @ np.array([-side * 0.7 * radii[0], 0.35 * radii[1], 0.0])
            sinus_center = tuple(np.array(center) + sinus_offset)
            self.points[f"{name}_hilum"] = sinus_center
            sinus_radii = (0.55 * radii[0], 0.4 * radii[1], 0.45 * radii[2])
            box = self.box(center, (radii[2] * 1.2,) * 3)
            if box is None:
                continue

            def level_set(
                c,
                center=center,
                radii=radii,
                rot=rot,
                sinus_center=sinus_center,
                sinus_radii=sinus_radii,
            ):
                kidney = as_distance(self.grid, ellipsoid(c, center, radii, rot))
                sinus = as_distance(self.grid, ellipsoid(c, sinus_center, sinus_radii, rot))
                return np.maximum(kidney, -sinus)  # the hilum: renal sinus fat cut out of the bean

            distance = self.organ(name, box, level_set, self.u(2.0, 4.0))
            if box is not None and distance is not None:
                self.add(name, "kidney", ORGAN_IDS[name], box, distance)

    def pancreas(self) -> None:
        z0 = self.kidney_z + self.u(25, 45)
        ax, ay = self.aorta_xy
        head = (
            self.ivc_xy[0] + self.u(-5, 10),
            self.ivc_xy[1] + self.u(20, 30),
            z0 - self.u(10, 20),
        )
        neck = (ax - 10.0, ay + self.u(28, 38), z0)
        body = (ax + self.u(30, 45), ay + self.u(22, 32), z0 + self.u(5, 15))
        sx, sy, _ = self.spleen_center
        tail = (sx - self.u(25, 40), sy + self.u(10, 25), z0 + self.u(15, 30))
        points = np.array([head, neck, body, tail], dtype=np.float64)
        for part, point in zip(("head", "neck", "body", "tail"), points, strict=True):
            self.points[f"pancreas_{part}"] = tuple(point)
        radii = np.array([self.u(14, 19), self.u(9, 12), self.u(10, 13), self.u(8, 11)])
        center = points.mean(axis=0)
        half = np.abs(points - center).max(axis=0) + radii.max()
        box = self.box(center, half)
        if box is None:
            return
        distance = polyline_tube(self.grid.coords(box), points, radii)
        distance += 2.0 * self.noise(box, 25.0) + 1.5 * self.noise(box, 8.0)  # lobulated outline
        self.add(
            "pancreas", "pancreas", ORGAN_IDS["pancreas"], box, self.inside_cavity(box, distance)
        )

    def place_spine(self) -> None:
        """Vertebral geometry, sampled early because the great vessels and pancreas hang on it."""
        rx, ry = self.u(18, 24), self.u(14, 18)
        self.vertebral_body = (rx, ry)
        self.aorta_xy = (self.spine_x + self.u(12, 22), self.spine_y + ry + self.u(14, 20))
        self.ivc_xy = (self.spine_x - self.u(20, 30), self.spine_y + ry + self.u(12, 20))

    def spine(self) -> None:
        rx, ry = self.vertebral_body
        period, disc = self.u(30, 36), self.u(3.0, 5.0)
        phase = self.u(0, period)
        box = self.box((self.spine_x, self.spine_y - 30, 0.0), (60.0, 70.0, 1e4))
        if box is None:
            return
        x, y, z = self.grid.coords(box)
        bend, tilt, lean = self.u(-8, 8), self.u(-3, 3), self.u(-3, 3)
        curve = bend * (z / 200.0) ** 2 + tilt * z / 200.0
        vx, vy = self.spine_x + lean * z / 200.0, self.spine_y + curve
        column = as_distance(self.grid, elliptic_cylinder((x, y, z), (vx, vy), (rx, ry)))
        canal_r = self.u(7, 9)
        canal_y = vy - ry - canal_r - 2.0
        canal = np.hypot(x - vx, y - canal_y) - canal_r
        arch = np.maximum(canal - 6.0, -canal)
        spinous = as_distance(
            self.grid, elliptic_cylinder((x, y, z), (vx, canal_y - canal_r - 18.0), (4.0, 20.0))
        )
        transverse = as_distance(
            self.grid, elliptic_cylinder((x, y, z), (vx, canal_y + 2.0), (self.u(34, 42), 6.0))
        )
        offset = np.mod(z - phase, period)
        gap = disc - np.minimum(offset, period - offset)  # > 0 inside an intervertebral disc
        vertebrae = np.maximum(np.minimum.reduce([column, arch, spinous, transverse]), gap)
        # vertebral-body centres: midway between two discs, on the column's axis
        first = int(np.floor((float(z.min()) - phase) / period))
        for k in range(first, int(np.ceil((float(z.max()) - phase) / period)) + 1):
            zc = phase + (k + 0.5) * period
            self.points[f"vertebra_{k - first:02d}"] = (
                self.spine_x + lean * zc / 200.0,
                self.spine_y + bend * (zc / 200.0) ** 2 + tilt * zc / 200.0,
                zc,
            )
        self.add("discs", "disc", 0, box, column)
        self.add("vertebrae", "bone_cortical", ORGAN_IDS["vertebrae"], box, vertebrae)
        self.add("marrow", "bone_cancellous", None, box, vertebrae + 2.0)
        self.add("spinal_canal", "csf", 0, box, canal)

    def vessels(self) -> None:
        for name, (x0, y0), radii in (
            ("inferior_vena_cava", self.ivc_xy, (self.u(10, 15), self.u(7, 11))),
            ("aorta", self.aorta_xy, (self.u(9, 13),) * 2),
        ):
            box = self.box((x0, y0, 0.0), (35.0, 35.0, 1e4))
            if box is None:
                continue
            x, y, z = self.grid.coords(box)
            drift = self.u(-4, 4) * z / 100.0
            tube = as_distance(
                self.grid, elliptic_cylinder((x, y, z), (x0 + drift, y0 + 0.5 * drift), radii)
            )
            tissue = "aorta" if name == "aorta" else "ivc"
            self.add(name, tissue, ORGAN_IDS[name], box, tube + 0.8 * self.noise(box, 30.0))


def build_anatomy(
    grid: PhantomGrid, rng: np.random.Generator, with_table: bool
) -> tuple[list[Structure], dict, dict[str, tuple[float, float, float]]]:
    """Sample one patient on ``grid``: structures in painting order, the sampled parameters and
    named anatomical points in the shape frame (:mod:`voxssl.data.phantoms.landmarks` maps them to voxels)."""
    builder = _Builder(grid, rng)
    builder.deformation()
    builder.body(with_table)
    builder.place_spine()
    builder.bowel()
    builder.liver()
    builder.spleen()
    builder.stomach()
    builder.kidneys()
    builder.back_muscles()
    builder.pancreas()
    builder.spine()
    builder.vessels()
    return builder.structures, builder.params, builder.points
