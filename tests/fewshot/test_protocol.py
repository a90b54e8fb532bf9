"""The evaluation protocol: C = 3 support slices, query chunks, folds; Setting 2 exclusion."""

from __future__ import annotations

import numpy as np

from voxssl.fewshot.episodes import training_slice_mask
from voxssl.fewshot.protocol import cv_folds, query_chunks, support_scan, support_slices


def test_c3_support_slices_at_sixths():
    # range 10..27 holds 18 slices: middles of the thirds are 10 + 3, 10 + 9, 10 + 15
    assert support_slices((10, 27), 3) == [13, 19, 25]
    assert support_slices((0, 5), 3) == [1, 3, 5]
    assert support_slices((7, 7), 3) == [7, 7, 7]


def test_query_range_split_in_three():
    parts = query_chunks((10, 20), 3)
    assert parts == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19, 20]]
    assert [z for part in parts for z in part] == list(range(10, 21))


def test_folds_sorted_and_support_outside_fold():
    ids = [f"s{i:02d}" for i in (5, 3, 0, 1, 4, 2, 6)]
    folds = cv_folds(ids, 5)
    assert [case for fold in folds for case in fold] == sorted(ids)
    assert [len(f) for f in folds] == [2, 2, 1, 1, 1]
    for fold in folds:
        assert support_scan(ids, fold) not in fold
    assert support_scan(ids, folds[0]) == "s02"


def test_setting2_excludes_every_slice_with_a_test_class():
    label = np.zeros((4, 4, 6), dtype=np.uint8)
    label[0, 0, 1] = 2  # a single pixel of right kidney on slice 1
    label[1:3, 1:3, 3] = 3  # left kidney on slice 3
    label[:, :, 4] = 6  # liver on slice 4
    keep = training_slice_mask(label, 6, [2, 3], setting=2)
    np.testing.assert_array_equal(keep, [True, False, True, False, True, True])
    assert training_slice_mask(label, 6, [2, 3], setting=1).all()
    assert training_slice_mask(None, 6, [2, 3], setting=2).all()
