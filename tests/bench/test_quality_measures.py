"""bench/quality_measures.py: hand-counted fluid measures of tiny label volumes written with SimpleITK."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import config
from bench.quality_measures import MeasureError, case_measures, dice, pooled_measures, ratio

SHAPE = (2, 4, 6)  # (z, y, x): 2 B-scans of 4 rows by 6 columns
SPACING_MM = (0.5, 0.25, 2.0)  # (x, y, z): a B-scan pixel is 0.125 mm², a voxel 0.25 mm³
COLUMNS = (1, 5)  # x in [1, 5)


def write_labels(path: Path, array: np.ndarray, spacing_mm: tuple[float, float, float] = SPACING_MM) -> Path:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing_mm)
    sitk.WriteImage(image, str(path))
    return path


def reference_labels() -> np.ndarray:
    """6 fluid voxels: B-scan 0, row 1, x 0..3 (IRF); B-scan 1, row 2, x 4..5 (SRF)."""
    array = np.zeros(SHAPE, np.uint8)
    array[0, 1, 0:4] = 1
    array[1, 2, 4:6] = 2
    return array


def predicted_labels() -> np.ndarray:
    """5 fluid voxels, other fluid codes than the reference's (fluid is merged): B-scan 0, row 1, x 1..4 (PED);
    B-scan 1, row 2, x 5 (IRF)."""
    array = np.zeros(SHAPE, np.uint8)
    array[0, 1, 1:5] = 3
    array[1, 2, 5] = 1
    return array


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, Path]:
    """``(prediction, reference)`` paths of the hand-counted case."""
    return (write_labels(tmp_path / "segmentation.mhd", predicted_labels()),
            write_labels(tmp_path / "reference.mhd", reference_labels()))


@pytest.mark.parametrize("tp, n_pred, n_ref, expected", [
    (0, 0, 0, None),  # fluid in neither: undefined
    (4, 5, 6, 8 / 11),
    (3, 3, 3, 1.0),
    (0, 3, 0, 0.0),  # fluid only in the prediction
    (0, 0, 3, 0.0),  # fluid only in the reference
])
def test_dice_from_counts(tp, n_pred, n_ref, expected):
    assert dice(tp, n_pred, n_ref) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("numerator, denominator, expected", [(5, 6, 5 / 6), (0, 4, 0.0), (3, 0, None), (0, 0, None)])
def test_ratio_is_none_without_a_denominator(numerator, denominator, expected):
    assert ratio(numerator, denominator) == (None if expected is None else pytest.approx(expected))


def test_case_measures_hand_counted(case):
    result = case_measures(*case, columns=COLUMNS)
    # B-scan 0: reference x 0..3, prediction x 1..4 -> 3 shared; B-scan 1: reference x 4..5, prediction x 5 -> 1.
    assert (result["tp"], result["pred"], result["ref"]) == (4, 5, 6)
    # x in [1, 5): reference x 1..3 and x 4 (4), prediction x 1..4 (4), shared x 1..3 (3); x 5 is left out.
    assert (result["cols_tp"], result["cols_pred"], result["cols_ref"]) == (3, 4, 4)
    assert result["n_bscans"] == 2
    assert result["spacing_mm"] == list(SPACING_MM)
    assert result["voxel_mm3"] == pytest.approx(0.25)
    assert result["dice"] == pytest.approx(2 * 4 / (5 + 6))
    assert result["dice_cols"] == pytest.approx(2 * 3 / (4 + 4))
    assert result["pred_area_mm2"] == pytest.approx(5 * 0.125)
    assert result["ref_area_mm2"] == pytest.approx(6 * 0.125)
    assert result["pred_volume_mm3"] == pytest.approx(5 * 0.25)
    assert result["ref_volume_mm3"] == pytest.approx(6 * 0.25)
    assert result["abs_volume_diff_mm3"] == pytest.approx(0.25)
    assert result["area_ratio"] == pytest.approx(5 / 6)


def test_column_range_is_clipped_to_the_width(case):
    whole = case_measures(*case, columns=(0, 1000))
    assert (whole["cols_tp"], whole["cols_pred"], whole["cols_ref"]) == (4, 5, 6)
    beyond = case_measures(*case, columns=(100, 650))  # the real set's range on a 6-column B-scan
    assert (beyond["cols_tp"], beyond["cols_pred"], beyond["cols_ref"]) == (0, 0, 0)
    assert beyond["dice_cols"] is None and beyond["dice"] == pytest.approx(8 / 11)
    below = case_measures(*case, columns=(-3, 1000))  # a negative start is column 0, not counted from the end
    assert (below["cols_tp"], below["cols_pred"], below["cols_ref"]) == (4, 5, 6)


def test_without_fluid_dice_and_area_ratio_are_undefined(tmp_path):
    empty = write_labels(tmp_path / "empty.mhd", np.zeros(SHAPE, np.uint8))
    neither = case_measures(empty, empty, columns=COLUMNS)
    assert neither["dice"] is None and neither["dice_cols"] is None and neither["area_ratio"] is None
    assert neither["abs_volume_diff_mm3"] == 0.0
    predicted_only = case_measures(write_labels(tmp_path / "pred.mhd", predicted_labels()), empty, columns=COLUMNS)
    assert predicted_only["dice"] == 0.0 and predicted_only["area_ratio"] is None
    assert predicted_only["abs_volume_diff_mm3"] == pytest.approx(5 * 0.25)


def test_pooled_dice_sums_counts_over_cases_instead_of_averaging_their_dice(tmp_path, case):
    big = case_measures(*case, columns=COLUMNS)  # TP 4, |P| 5, |G| 6: Dice 8/11
    # one fluid voxel each, apart (reference at x 0, prediction at x 2): Dice 0; 1 mm pixels, 1 mm³ voxels
    reference, prediction = np.zeros(SHAPE, np.uint8), np.zeros(SHAPE, np.uint8)
    reference[0, 0, 0], prediction[1, 3, 2] = 1, 1
    small = case_measures(write_labels(tmp_path / "small_pred.mhd", prediction, (1.0, 1.0, 1.0)),
                          write_labels(tmp_path / "small_ref.mhd", reference, (1.0, 1.0, 1.0)), columns=COLUMNS)
    empty = write_labels(tmp_path / "empty.mhd", np.zeros(SHAPE, np.uint8))
    none = case_measures(empty, empty, columns=COLUMNS)  # Dice undefined: out of the per-patient mean
    pooled = pooled_measures([big, small, none])
    assert pooled["n_cases"] == 3 and pooled["n_bscans"] == 6
    assert pooled["dice_pooled"] == pytest.approx(2 * (4 + 0) / ((5 + 6) + (1 + 1)))  # 8/13
    assert pooled["dice_per_patient_mean"] == pytest.approx((8 / 11 + 0.0) / 2)  # 4/11
    assert pooled["dice_pooled"] != pytest.approx(pooled["dice_per_patient_mean"])
    # columns [1, 5): big 3 TP, 4 + 4; small: only the prediction's voxel (x 2) is inside
    assert pooled["dice_pooled_cols"] == pytest.approx(2 * 3 / ((4 + 4) + (1 + 0)))
    assert pooled["abs_volume_diff_mean_mm3"] == pytest.approx((0.25 + 0.0 + 0.0) / 3)
    # areas in mm², not pixel counts: (5 x 0.125 + 1 x 1) / (6 x 0.125 + 1 x 1) = 13/14, where pixels give 6/7
    assert pooled["area_ratio"] == pytest.approx(13 / 14)


def test_pooled_measures_of_no_case_are_undefined():
    assert pooled_measures([]) == {"n_cases": 0, "n_bscans": 0, "dice_pooled": None, "dice_pooled_cols": None,
                                   "dice_per_patient_mean": None, "abs_volume_diff_mean_mm3": None,
                                   "area_ratio": None}


def test_a_prediction_of_another_size_is_an_error_naming_it(tmp_path):
    prediction = write_labels(tmp_path / "segmentation.mhd", np.zeros((2, 4, 5), np.uint8))
    reference = write_labels(tmp_path / "reference.mhd", reference_labels())
    with pytest.raises(MeasureError, match=r"segmentation\.mhd: size \(z, y, x\) \(2, 4, 5\) differs") as raised:
        case_measures(prediction, reference, columns=COLUMNS)
    assert str(raised.value).startswith(str(prediction))


@pytest.mark.parametrize("relative_difference, accepted", [(0.5, True), (2.0, False), (100.0, False)])
def test_spacing_may_differ_by_config_spacing_rtol(tmp_path, relative_difference, accepted):
    # relative_difference is in units of config.SPACING_RTOL, on the x spacing
    x_mm = SPACING_MM[0] * (1 + relative_difference * config.SPACING_RTOL)
    prediction = write_labels(tmp_path / "segmentation.mhd", predicted_labels(), (x_mm, *SPACING_MM[1:]))
    reference = write_labels(tmp_path / "reference.mhd", reference_labels())
    if accepted:
        assert case_measures(prediction, reference, columns=COLUMNS)["tp"] == 4
        return
    with pytest.raises(MeasureError, match=r"spacing \(x, y, z\) .* mm differs from the reference's") as raised:
        case_measures(prediction, reference, columns=COLUMNS)
    assert str(raised.value).startswith(str(prediction)) and str(reference) in str(raised.value)


def test_the_spacing_tolerance_is_the_one_in_config_py(tmp_path, monkeypatch):
    prediction = write_labels(tmp_path / "segmentation.mhd", predicted_labels(), (0.501, *SPACING_MM[1:]))
    reference = write_labels(tmp_path / "reference.mhd", reference_labels())
    with pytest.raises(MeasureError, match="spacing"):
        case_measures(prediction, reference, columns=COLUMNS)  # 0.2 % apart
    monkeypatch.setattr(config, "SPACING_RTOL", 0.01)
    assert case_measures(prediction, reference, columns=COLUMNS)["spacing_mm"] == list(SPACING_MM)


def test_a_missing_or_unreadable_volume_is_an_error_naming_it(tmp_path, case):
    prediction, reference = case
    missing = tmp_path / "missing.mhd"
    with pytest.raises(MeasureError, match=f"^{re.escape(str(missing))}: no such file$"):
        case_measures(missing, reference, columns=COLUMNS)
    broken = tmp_path / "broken.mhd"
    broken.write_text("not a MetaImage header\n")
    with pytest.raises(MeasureError, match=f"^{re.escape(str(broken))}: cannot read the volume"):
        case_measures(prediction, broken, columns=COLUMNS)
