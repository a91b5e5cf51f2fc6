"""Hand-computed tables for utils/evaluate/volume_metrics.py."""

import math

import numpy as np
import pandas as pd
import pytest

import config
from utils.evaluate import volume_metrics as vm
from utils.io.mhd_io import Geometry, VolumeError, write_volume

IRF, SRF, PED = config.FLUIDS["IRF"], config.FLUIDS["SRF"], config.FLUIDS["PED"]
FLUIDS, BACKGROUND, VENDORS, RTOL = config.FLUIDS, config.BACKGROUND, config.VENDORS, config.SPACING_RTOL
SPACING_MM = (0.5, 0.25, 2.0)  # (x, y, z): voxel volume 0.25 mm³
VOXEL_MM3 = 0.25


def nan_equal(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


@pytest.mark.parametrize("tp, fp, fn, expected", [
    (0, 0, 0, float("nan")),  # fluid in neither volume: undefined
    (5, 0, 0, 1.0),
    (1, 1, 0, 2 / 3),
    (2, 1, 2, 4 / 7),
    (0, 3, 0, 0.0),  # fluid only in the prediction
    (0, 0, 3, 0.0),  # fluid only in the reference
])
def test_dice_from_counts(tp, fp, fn, expected):
    assert nan_equal(vm.dice_from_counts(tp, fp, fn), expected)


def labels(shape=(2, 3, 4), **voxels):
    """A uint8 label volume with each fluid's code at the given (z, y, x) voxels."""
    array = np.zeros(shape, np.uint8)
    for fluid, points in voxels.items():
        for point in points:
            array[point] = config.FLUIDS[fluid]
    return array


def test_case_fluid_metrics_hand_table():
    reference = labels(IRF=[(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)], SRF=[(1, 2, 0), (1, 2, 1)])
    prediction = labels(IRF=[(0, 0, 0), (0, 0, 1), (0, 1, 0)], SRF=[(1, 2, 0), (1, 2, 1)])
    rows = {row["fluid"]: row for row in vm.case_fluid_metrics(prediction, reference, VOXEL_MM3, FLUIDS)}
    assert list(rows) == list(config.FLUIDS)
    # IRF: TP 2, FP 1, FN 2 -> 4/7; 3 vs 4 voxels of 0.25 mm³.
    assert rows["IRF"]["dice"] == pytest.approx(4 / 7)
    assert rows["IRF"]["reference_volume_mm3"] == pytest.approx(1.0)
    assert rows["IRF"]["predicted_volume_mm3"] == pytest.approx(0.75)
    assert rows["IRF"]["abs_volume_diff_mm3"] == pytest.approx(0.25)
    assert rows["SRF"]["dice"] == 1.0 and rows["SRF"]["abs_volume_diff_mm3"] == 0.0
    # PED in neither volume: Dice undefined, no volume difference, absent from both.
    assert math.isnan(rows["PED"]["dice"])
    assert rows["PED"]["abs_volume_diff_mm3"] == 0.0
    assert rows["PED"]["reference_present"] is False and rows["PED"]["predicted_present"] is False
    assert rows["IRF"]["reference_present"] is True


def test_case_fluid_metrics_perfect_prediction():
    reference = labels(IRF=[(0, 1, 1)], SRF=[(1, 0, 0)], PED=[(1, 2, 3), (1, 2, 2)])
    for row in vm.case_fluid_metrics(reference.copy(), reference, VOXEL_MM3, FLUIDS):
        assert row["dice"] == 1.0 and row["abs_volume_diff_mm3"] == 0.0


def test_case_fluid_metrics_bad_input():
    with pytest.raises(ValueError, match="shape"):
        vm.case_fluid_metrics(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 5), np.uint8), 1.0, FLUIDS)
    with pytest.raises(ValueError, match="voxel_volume_mm3"):
        vm.case_fluid_metrics(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8), 0.0, FLUIDS)


def test_presence_from_labels():
    assert vm.presence_from_labels(labels(SRF=[(0, 0, 0)]), FLUIDS) == {"IRF": 0.0, "SRF": 1.0, "PED": 0.0}


def test_the_fluids_given_are_the_fluids_scored():
    """FLUIDS comes from the caller's config (--set reaches it), not from config.py."""
    prediction = labels(IRF=[(0, 0, 0)], SRF=[(1, 1, 1)])
    assert vm.presence_from_labels(prediction, {"SRF": SRF}) == {"SRF": 1.0}
    rows = vm.case_fluid_metrics(prediction, prediction, VOXEL_MM3, {"SRF": SRF})
    assert [(row["fluid"], row["dice"]) for row in rows] == [("SRF", 1.0)]


@pytest.mark.parametrize("scores, truth, expected", [
    ([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75),
    ([0.5, 0.5, 0.5, 0.9], [0, 1, 0, 1], 0.75),  # tie 0.5 vs 0.5 counts 1/2 twice, 0.9 beats both: 3/4
    ([1.0, 0.0, 1.0, 0.0], [1, 1, 0, 0], 0.5),  # binary scores from label volumes
    ([0.2, 0.9, 0.8], [0, 1, 1], 1.0),
    ([0.9, 0.1, 0.2], [0, 1, 1], 0.0),
    ([0.3, 0.3, 0.3], [1, 0, 1], 0.5),  # all tied
    ([0.2, 0.9, 0.8], [1, 1, 1], float("nan")),  # all positive
    ([0.2, 0.9, 0.8], [False, False, False], float("nan")),  # all negative
    ([], [], float("nan")),
])
def test_roc_auc(scores, truth, expected):
    assert nan_equal(vm.roc_auc(scores, truth), expected)


def test_roc_auc_bad_input():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        vm.roc_auc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="finite"):
        vm.roc_auc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="0/1"):
        vm.roc_auc([0.1, 0.2], [0, 2])


def test_check_same_grid():
    geometry = Geometry(spacing_mm=SPACING_MM)
    close = Geometry(spacing_mm=(0.50001, 0.25, 2.0))  # 2e-5 relative: another tool's rounding
    vm.check_same_grid((2, 3, 4), close, (2, 3, 4), geometry, "p.mhd", RTOL)
    with pytest.raises(VolumeError, match=r"^p\.mhd: spacing .* \(relative tolerance 1e-06\)"):
        vm.check_same_grid((2, 3, 4), close, (2, 3, 4), geometry, "p.mhd", 1e-6)  # the tolerance given is used
    with pytest.raises(VolumeError, match=r"^p\.mhd: size \(z, y, x\) \(2, 3, 5\) differs"):
        vm.check_same_grid((2, 3, 5), geometry, (2, 3, 4), geometry, "p.mhd", RTOL)
    with pytest.raises(VolumeError, match=r"^p\.mhd: spacing"):
        vm.check_same_grid((2, 3, 4), Geometry(spacing_mm=(0.5, 0.25, 1.0)), (2, 3, 4), geometry, "p.mhd", RTOL)


def test_check_labels():
    vm.check_labels(labels(IRF=[(0, 0, 0)], PED=[(1, 1, 1)]), [0, IRF, SRF, PED], "p.mhd")
    with pytest.raises(VolumeError, match=r"^p\.mhd: unexpected label values 7"):
        vm.check_labels(np.full((1, 2, 2), 7, np.uint8), [0, IRF, SRF, PED], "p.mhd")
    with pytest.raises(VolumeError, match=r"unexpected label values 2;"):  # a gap between allowed codes
        vm.check_labels(np.array([[[0, 1, 2, 3]]], np.uint8), [0, 1, 3], "p.mhd")
    with pytest.raises(VolumeError, match=r"unexpected label values -5, 9"):
        vm.check_labels(np.array([[[-5, 0, 9, 3]]], np.int32), [0, 1, 2, 3], "p.mhd")
    with pytest.raises(VolumeError, match="integer"):
        vm.check_labels(np.zeros((1, 2, 2), np.float32), [0, IRF, SRF, PED], "p.mhd")


def per_case_table(rows):
    """A per-case frame from (case, vendor, fluid, dice, avd, reference_present, presence_score) tuples."""
    return pd.DataFrame([{"case": c, "vendor": v, "fluid": f, "dice": d, "abs_volume_diff_mm3": a,
                          "reference_volume_mm3": 0.0, "predicted_volume_mm3": 0.0, "reference_present": r,
                          "predicted_present": s > 0, "presence_score": s} for c, v, f, d, a, r, s in rows],
                        columns=list(vm.PER_CASE_COLUMNS))


def test_summarize_absent_from_both_rule():
    nan = float("nan")
    per_case = per_case_table([
        ("A", "Cirrus", "IRF", 0.6, 1.0, True, 0.9),
        ("B", "Cirrus", "IRF", nan, 0.0, False, 0.1),  # IRF in neither volume
        ("C", "Topcon", "IRF", 0.0, 3.0, False, 0.8),  # IRF only in the prediction
        ("D", "Topcon", "IRF", 0.3, 2.0, True, 0.8),
    ])
    summary = vm.summarize(per_case, VENDORS, ["IRF"]).set_index("vendor")
    assert list(summary.index) == ["Cirrus", "Topcon", "all"]  # config.VENDORS order; no Spectralis cases
    everything = summary.loc["all"]
    assert everything["n_cases"] == 4 and everything["n_with_fluid"] == 3 and everything["n_reference_present"] == 2
    assert everything["dice_mean_with_fluid"] == pytest.approx((0.6 + 0.0 + 0.3) / 3)  # B left out
    assert everything["dice_mean_reference_present"] == pytest.approx((0.6 + 0.3) / 2)  # A and D: reference has IRF
    assert everything["dice_mean_all"] == pytest.approx((0.6 + 1.0 + 0.0 + 0.3) / 4)  # B counts 1.0
    assert everything["abs_volume_diff_mean_mm3"] == pytest.approx(1.5)
    # positives 0.9, 0.8 vs negatives 0.1, 0.8: 1 + 1 + 1 + 1/2 of 4 pairs
    assert everything["auc"] == pytest.approx(3.5 / 4)
    assert summary.loc["Cirrus", "dice_mean_with_fluid"] == pytest.approx(0.6)
    assert summary.loc["Cirrus", "dice_mean_all"] == pytest.approx(0.8)
    assert summary.loc["Cirrus", "auc"] == pytest.approx(1.0)
    assert summary.loc["Topcon", "auc"] == pytest.approx(0.5)  # a tie: 0.8 vs 0.8
    assert list(summary.reset_index().columns) == list(vm.SUMMARY_COLUMNS)


def test_summarize_no_case_with_fluid():
    per_case = per_case_table([("A", "Cirrus", "PED", float("nan"), 0.0, False, 0.0)])
    row = vm.summarize(per_case, VENDORS, ["PED"]).iloc[-1]
    assert math.isnan(row["dice_mean_with_fluid"]) and row["dice_mean_all"] == 1.0 and math.isnan(row["auc"])
    assert math.isnan(row["dice_mean_reference_present"])


def test_evaluate_case_files_uses_reference_spacing(tmp_path):
    geometry = Geometry(spacing_mm=SPACING_MM)
    reference = labels(IRF=[(0, 0, 0), (0, 0, 1)], PED=[(1, 1, 1)])
    prediction = labels(IRF=[(0, 0, 0)], SRF=[(1, 2, 3)], PED=[(1, 1, 1)])
    write_volume(tmp_path / "reference.mhd", reference, geometry)
    write_volume(tmp_path / "segmentation.mhd", prediction, geometry)
    rows, presence, merged = vm.evaluate_case_files(tmp_path / "segmentation.mhd", tmp_path / "reference.mhd",
                                                    FLUIDS, BACKGROUND, RTOL)
    rows = {row["fluid"]: row for row in rows}
    assert rows["IRF"]["dice"] == pytest.approx(2 / 3)
    assert rows["IRF"]["abs_volume_diff_mm3"] == pytest.approx(0.25)
    assert rows["SRF"]["dice"] == 0.0 and rows["SRF"]["predicted_volume_mm3"] == pytest.approx(0.25)
    assert rows["PED"]["dice"] == 1.0
    assert presence == {"IRF": 1.0, "SRF": 1.0, "PED": 1.0}
    assert merged == (2, 3, 3)  # the IRF voxel (0, 0, 0) and the PED voxel; 3 predicted, 3 in the reference


def test_merged_fluid_ignores_the_type_and_pools_over_cases_by_voxels():
    reference = labels(SRF=[(0, 0, 0), (0, 0, 1)])
    prediction = labels(IRF=[(0, 0, 0)], PED=[(1, 1, 1)])
    assert vm.merged_fluid_counts(prediction, reference, list(FLUIDS.values())) == (1, 2, 2)
    # one small case missed, one large case found: pooled by voxels, not a mean of the two Dice (0 and 1)
    assert vm.pooled_dice([(0, 0, 2), (8, 8, 8)]) == pytest.approx(16 / 18)
    assert math.isnan(vm.pooled_dice([(0, 0, 0)])) and math.isnan(vm.pooled_dice([]))


def test_evaluate_case_files_size_mismatch_names_prediction(tmp_path):
    geometry = Geometry(spacing_mm=SPACING_MM)
    write_volume(tmp_path / "reference.mhd", labels(), geometry)
    write_volume(tmp_path / "segmentation.mhd", labels(shape=(2, 3, 5)), geometry)
    with pytest.raises(VolumeError, match="segmentation.mhd: size"):
        vm.evaluate_case_files(tmp_path / "segmentation.mhd", tmp_path / "reference.mhd", FLUIDS, BACKGROUND, RTOL)


def test_read_presence_scores(tmp_path):
    path = tmp_path / "volumes.csv"
    path.write_text("case,vendor,n_bscans,IRF_volume_mm3,SRF_volume_mm3,PED_volume_mm3,IRF_presence,SRF_presence,"
                    "PED_presence\nTRAIN001,Cirrus,2,0.1,0,0,0.9,0.2,0\n")
    assert vm.read_presence_scores(path, list(FLUIDS)) == {"TRAIN001": {"IRF": 0.9, "SRF": 0.2, "PED": 0.0}}
    path.write_text("case,IRF_presence,SRF_presence\nTRAIN001,0.9,0.2\n")
    with pytest.raises(ValueError, match="volumes.csv: missing column.*PED_presence"):
        vm.read_presence_scores(path, list(FLUIDS))
    path.write_text("case,IRF_presence,SRF_presence,PED_presence\nTRAIN001,0.9,1.5,0\n")
    with pytest.raises(ValueError, match="SRF_presence of case TRAIN001 is 1.5"):
        vm.read_presence_scores(path, list(FLUIDS))
