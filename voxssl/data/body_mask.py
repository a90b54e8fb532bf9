"""Body mask: everything except the dark region connected to the in-plane border.

vox2vec's definition (CT: air below -500 HU connected to the border is outside the body). Only the
four in-plane faces (x and y) seed the outside: a scan cut through the chest has the trachea and
lungs open at the top z face, and seeding from z faces would put the lungs outside the body.
"""

from __future__ import annotations

import cc3d
import numpy as np


def body_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """bool (X, Y, Z): False for voxels below ``threshold`` connected (6-neighbourhood) to an x/y face.

    ``image`` is (X, Y, Z) or (C, X, Y, Z); for several channels a voxel is dark when it is dark
    in every channel.
    """
    dark = image < threshold if image.ndim == 3 else np.all(image < threshold, axis=0)
    components = cc3d.connected_components(dark, connectivity=6)
    border = np.concatenate(
        [
            components[0].ravel(),
            components[-1].ravel(),
            components[:, 0].ravel(),
            components[:, -1].ravel(),
        ]
    )
    outside_ids = np.zeros(int(components.max()) + 1, dtype=bool)
    outside_ids[np.unique(border)] = True
    outside_ids[0] = False  # component 0 = not dark
    return ~outside_ids[components]
