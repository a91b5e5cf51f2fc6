"""Tests of utils/predict/postprocess.py: presence gating and small-component removal, hand-made volumes."""

import numpy as np
import pytest

from utils.predict.postprocess import gate_absent_fluids, remove_small_components

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
