"""Tests of utils/predict/postprocess.py: presence gating, closing and small-component removal, hand-made volumes."""

import numpy as np
import pytest

from utils.predict.postprocess import close_fluids, gate_absent_fluids, remove_small_components

FLUIDS = {"IRF": 1, "SRF": 2, "PED": 3}


def test_gate_removes_only_fluids_below_the_threshold():
    labels = np.array([[[0, 1, 2, 3]]], np.uint8)
    gated = gate_absent_fluids(labels, {"IRF": 0.9, "SRF": 0.2, "PED": 0.5}, FLUIDS, threshold=0.5)
    np.testing.assert_array_equal(gated, [[[0, 1, 0, 3]]])  # PED at exactly the threshold stays
    assert gated.dtype == np.uint8
    assert gate_absent_fluids(labels, {"IRF": 0.0, "SRF": 0.0, "PED": 0.0}, FLUIDS, 0.0) is labels


def test_small_components_go_and_large_ones_stay():
    labels = np.zeros((2, 6, 6), np.uint8)
    labels[0, 0, 0] = 1  # 1 voxel of IRF
    labels[:, 3:5, 3:5] = 1  # 8 voxels of IRF, one component across both B-scans
    labels[1, 0, 4:6] = 2  # 2 voxels of SRF
    labels[0, 5, 0] = 2  # 1 voxel of SRF, diagonal neighbours do not connect
    cleaned = remove_small_components(labels, FLUIDS, voxel_volume_mm3=0.5, min_volume_mm3=1.0)  # >= 2 voxels
    expected = labels.copy()
    expected[0, 0, 0] = 0
    expected[0, 5, 0] = 0
    np.testing.assert_array_equal(cleaned, expected)
    assert remove_small_components(labels, FLUIDS, 0.5, 0.0) is labels
    with pytest.raises(ValueError, match="MIN_COMPONENT_MM3"):
        remove_small_components(labels, FLUIDS, 0.5, -1.0)


def test_closing_joins_near_pockets_in_mm_and_leaves_far_ones_and_other_fluids():
    # pixels 0.01 mm wide (x) and 0.005 mm deep (y): a 0.02 mm radius spans 2 columns and 4 rows
    spacing = (0.01, 0.005, 0.1)
    labels = np.zeros((2, 20, 20), np.uint8)
    labels[0, 5:9, 2:5] = 1  # two IRF pockets 2 columns (0.02 mm) apart ...
    labels[0, 5:9, 7:10] = 1
    labels[0, 5:9, 16:19] = 1  # ... and a third 6 columns (0.06 mm) from them
    labels[1, 2:4, 2:9] = 2  # SRF pockets 3 rows (0.015 mm) apart, with IRF beside the gap
    labels[1, 7:9, 2:9] = 2
    labels[1, 4:7, 10] = 1
    closed = close_fluids(labels, FLUIDS, spacing, radius_mm=0.02)
    assert closed.dtype == np.uint8 and closed.shape == labels.shape
    assert (closed[0, 6:8, 2:10] == 1).all()  # the near pockets joined (the ellipse leaves the gap's corners)
    assert not closed[0, :, 11:15].any() and (closed[0, 5:9, 16:19] == 1).all()  # the far one alone
    assert (closed[1, 4:7, 4:7] == 2).all()  # the SRF gap closed
    assert (closed[1, 4:7, 10] == 1).all()  # the IRF kept
    assert (closed[labels > 0] == labels[labels > 0]).all()  # only background is ever relabelled
    assert set(np.unique(closed[0, :, :2])) == {0}  # nothing at the edge grows


def test_closing_splits_a_contested_gap_by_distance_and_is_off_at_zero():
    labels = np.zeros((1, 15, 15), np.uint8)
    labels[0, 4:11, 0:5] = 1  # IRF left and right of (7, 7), 3 pixels from it ...
    labels[0, 4:11, 10:15] = 1
    labels[0, 0:3, 4:11] = 2  # ... SRF above and below it, 5 pixels from it
    labels[0, 12:15, 4:11] = 2
    closed = close_fluids(labels, FLUIDS, (1.0, 1.0, 1.0), radius_mm=6.0)
    assert closed[0, 7, 7] == 1  # both closings claim it: the nearer fluid's
    rows, columns = np.nonzero(closed[0] != labels[0])
    assert rows.size > 0
    for y, x in zip(rows, columns):  # every added pixel went to a fluid at least as near as the other
        nearest = {code: np.hypot(*(np.argwhere(labels[0] == code) - (y, x)).T).min() for code in (1, 2)}
        assert nearest[closed[0, y, x]] <= min(nearest.values())
    assert close_fluids(labels, FLUIDS, (1.0, 1.0, 1.0), 0.0) is labels
    with pytest.raises(ValueError, match="FLUID_CLOSING_MM"):
        close_fluids(labels, FLUIDS, (1.0, 1.0, 1.0), -0.1)


def test_closing_is_the_infinite_planes_at_the_edges():
    labels = np.zeros((1, 12, 12), np.uint8)
    labels[0, 0:4, 0:4] = 1  # two pockets on the top edge, 2 columns apart: the gap closes as inside the B-scan,
    labels[0, 0:4, 6:10] = 1  # its corners left (nothing lies beyond the edge to close them)
    labels[0, 9:11, 3:8] = 2  # a pocket 1 row above the bottom edge: nothing grows towards the edge
    closed = close_fluids(labels, FLUIDS, (1.0, 1.0, 1.0), radius_mm=2.0)
    assert (closed[0, 1:3, 4:6] == 1).all() and not closed[0, 0, 4:6].any() and not closed[0, 3, 4:6].any()
    assert not closed[0, 11].any() and (closed[0, 9:11] == labels[0, 9:11]).all()


def test_contested_pixels_go_by_distance_in_mm_not_in_pixels():
    # columns 1 mm wide, rows 0.25 mm deep: (20, 20) is 4 columns (4 mm) from IRF, 5 rows (1.25 mm) from SRF
    labels = np.zeros((1, 40, 40), np.uint8)
    labels[0, 10:31, 0:17] = 1
    labels[0, 10:31, 24:40] = 1
    labels[0, 13:16, 18:23] = 2
    labels[0, 25:28, 18:23] = 2
    closed = close_fluids(labels, FLUIDS, (1.0, 0.25, 1.0), radius_mm=5.0)
    assert closed[0, 20, 20] == 2
