"""The evaluation protocol: C = 3 support slices, query chunks, folds; Setting 2 exclusion."""

from __future__ import annotations

import numpy as np

from voxssl.fewshot.episodes import training_slice_mask
from voxssl.fewshot.inference import chunk_plan
from voxssl.fewshot.protocol import (
    cv_folds,
    query_chunk_reference,
    query_chunks,
    support_scan,
    support_slices,
    support_slices_reference,
)


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


def test_reference_support_scan_is_the_scan_after_the_fold_circularly():
    """SSL-ALPNet get_scanids + SUPP_ID (kept by DINOv2-ALPNet): Abd-CT folds of 6 sorted scans,
    support = the 7th scan loaded (the next one, wrapping round for the last fold)."""
    ids = [f"p{i:02d}" for i in range(30)]
    folds = cv_folds(ids, 5)
    assert [support_scan(ids, f, rule="next_scan") for f in folds] == [
        "p06",
        "p12",
        "p18",
        "p24",
        "p00",
    ]
    # Abd-MRI: 20 CHAOS T2-SPIR patients, folds of 4, SUPP_ID [4]
    chaos = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]
    keys = [f"mr_{p:02d}_t2spir" for p in chaos]
    supports = [support_scan(keys, f, rule="next_scan") for f in cv_folds(keys, 5)]
    assert supports == [f"mr_{p:02d}_t2spir" for p in (8, 19, 31, 36, 1)]
    assert support_scan(ids, folds[1], rule="index") == "p00"  # the former rule


def test_reference_chunks_index_the_organ_slices_and_clip_the_last_part():
    # organ on slices 10..19 except 15: support slices are elements floor(n/6), floor(n/2), floor(5n/6)
    slices = [10, 11, 12, 13, 14, 16, 17, 18, 19]
    assert support_slices_reference(slices, 3) == [11, 14, 18]
    # query range 0..9: (z - 0) // 3 -> 0,0,0,1,1,1,2,2,2, and z = 9 clipped to 2
    assert [query_chunk_reference(z, (0, 9), 3) for z in range(10)] == [
        0,
        0,
        0,
        1,
        1,
        1,
        2,
        2,
        2,
        2,
    ]
    assert query_chunk_reference(5, (5, 5), 3) == 0


def test_chunk_plan_scores_the_range_or_only_the_slices_with_the_organ():
    support = np.zeros((2, 2, 12), dtype=np.uint8)
    support[:, :, 2:11] = 6
    query = np.zeros((2, 2, 12), dtype=np.uint8)
    query[:, :, [1, 2, 3, 5, 6, 7, 8, 9, 10]] = 6  # a gap at slice 4
    anchors, parts = chunk_plan(support, query, 6, 3, "reference", "organ_range")
    assert anchors == [3, 6, 9] and [z for p in parts for z in p] == list(range(1, 11))
    _, present = chunk_plan(support, query, 6, 3, "reference", "organ_present")
    scored = [z for p in present for z in p]
    assert 4 not in scored and len(scored) == 9
    _, equal = chunk_plan(support, query, 6, 3, "equal", "organ_range")
    assert equal == query_chunks((1, 10), 3)
    assert chunk_plan(support, query, 2, 3) is None
