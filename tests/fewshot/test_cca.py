"""CCA keeps the component with the highest mean foreground probability (sum / size)."""

from __future__ import annotations

import numpy as np

from voxssl.fewshot.cca import apply_cca, component_confidences, keep_most_confident


def test_confidence_is_sum_over_size_not_size():
    prob = np.zeros((10, 10))
    prob[0:5, 0:5] = 0.6  # big, less confident: 25 px, confidence 0.6
    prob[7:9, 7:9] = 0.95  # small, confident: confidence 0.95
    kept = keep_most_confident(prob)
    assert kept[8, 8] and not kept[2, 2] and kept.sum() == 4
    components = np.zeros((10, 10), dtype=np.int64)
    components[0:5, 0:5] = 1
    components[7:9, 7:9] = 2
    np.testing.assert_allclose(component_confidences(components, prob, 2), [0.6, 0.95])


def test_2d_uses_8_connectivity_and_3d_one_component():
    prob = np.zeros((2, 6, 6))
    prob[0, 1, 1] = prob[0, 2, 2] = 0.9  # diagonal neighbours: one component with 8-connectivity
    prob[0, 5, 5] = 0.7
    prob[1, 0, 5] = 0.99
    two_d = apply_cca(prob, "2d")
    assert two_d[0, 1, 1] and two_d[0, 2, 2] and not two_d[0, 5, 5] and two_d[1, 0, 5]
    three_d = apply_cca(prob, "3d")
    assert three_d.sum() == 1 and three_d[1, 0, 5]
    np.testing.assert_array_equal(apply_cca(prob, "none"), prob > 0.5)
