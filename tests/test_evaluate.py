"""evaluate.py end to end on tiny hand-made cases in the RETOUCH layout."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import config
import evaluate
from utils.configuration import config_to_dict, load_config
from utils.io.mhd_io import Geometry, write_volume

SHAPE = (2, 4, 5)  # (z, y, x)
GEOMETRY = Geometry(spacing_mm=(0.5, 0.25, 2.0))  # (x, y, z): 0.25 mm³ per voxel


def labels(shape=SHAPE, **voxels):
    array = np.zeros(shape, np.uint8)
    for fluid, points in voxels.items():
        for point in points:
            array[point] = config.FLUIDS[fluid]
    return array


# case -> (vendor, reference, prediction); the expected numbers below are worked out from these by hand.
CASES = {
    # IRF: TP 2, FP 1, FN 2 -> Dice 4/7, 4 vs 3 voxels; SRF perfect; PED in neither.
    "TRAIN001": ("Cirrus",
                 labels(IRF=[(0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 0, 3)], SRF=[(1, 3, 0), (1, 3, 1)]),
                 labels(IRF=[(0, 0, 0), (0, 0, 1), (0, 1, 0)], SRF=[(1, 3, 0), (1, 3, 1)])),
    # PED perfect; SRF only predicted (Dice 0, 2 voxels); IRF in neither.
    "TRAIN002": ("Cirrus",
                 labels(PED=[(1, 2, 2), (1, 2, 3), (1, 2, 4)]),
                 labels(PED=[(1, 2, 2), (1, 2, 3), (1, 2, 4)], SRF=[(0, 1, 1), (0, 1, 2)])),
    # IRF missed (Dice 0, 2 voxels); SRF and PED in neither.
    "TRAIN025": ("Spectralis", labels(IRF=[(0, 2, 2), (1, 2, 2)]), labels()),
}


def write_case(root, name, vendor, reference, prediction):
    write_volume(root / "data" / vendor / name / "oct.mhd", np.full(reference.shape, 7, np.uint8), GEOMETRY)
    write_volume(root / "data" / vendor / name / "reference.mhd", reference, GEOMETRY)
    if prediction is not None:
        write_volume(root / "pred" / name / "segmentation.mhd", prediction, GEOMETRY)


@pytest.fixture
def layout(tmp_path):
    for name, (vendor, reference, prediction) in CASES.items():
        write_case(tmp_path, name, vendor, reference, prediction)
    return tmp_path


def run(root, *extra):
    assert evaluate.main(["--pred", str(root / "pred"), "--data-root", str(root / "data"), *extra]) == 0
    out = root / "pred" / "evaluation"
    return pd.read_csv(out / "per_case.csv", dtype={"case": str}), pd.read_csv(out / "summary.csv")


def cell(frame, **where):
    column = where.pop("column")
    mask = np.logical_and.reduce([frame[k] == v for k, v in where.items()])
    (value,) = frame.loc[mask, column].tolist()
    return value


def test_per_case_and_summary_from_label_volumes(layout, capsys):
    per_case, summary = run(layout)
    assert list(per_case.columns) == ["case", "vendor", "fluid", "dice", "abs_volume_diff_mm3",
                                      "reference_volume_mm3", "predicted_volume_mm3", "reference_present",
                                      "predicted_present", "presence_score"]
    assert len(per_case) == 3 * len(config.FLUIDS)
    assert cell(per_case, case="TRAIN001", fluid="IRF", column="dice") == pytest.approx(4 / 7)
    assert cell(per_case, case="TRAIN001", fluid="IRF", column="reference_volume_mm3") == pytest.approx(1.0)
    assert cell(per_case, case="TRAIN001", fluid="IRF", column="predicted_volume_mm3") == pytest.approx(0.75)
    assert cell(per_case, case="TRAIN001", fluid="IRF", column="abs_volume_diff_mm3") == pytest.approx(0.25)
    assert cell(per_case, case="TRAIN001", fluid="SRF", column="dice") == 1.0
    assert cell(per_case, case="TRAIN001", fluid="SRF", column="abs_volume_diff_mm3") == 0.0
    assert math.isnan(cell(per_case, case="TRAIN001", fluid="PED", column="dice"))  # in neither volume
    assert cell(per_case, case="TRAIN002", fluid="SRF", column="abs_volume_diff_mm3") == pytest.approx(0.5)
    assert cell(per_case, case="TRAIN025", fluid="IRF", column="vendor") == "Spectralis"
    # No volumes.csv: presence is whether the predicted label volume holds the fluid.
    assert cell(per_case, case="TRAIN002", fluid="SRF", column="presence_score") == 1.0
    assert cell(per_case, case="TRAIN025", fluid="IRF", column="presence_score") == 0.0

    everything = summary[summary["vendor"] == "all"].set_index("fluid")
    # IRF Dice 4/7, NaN, 0: the NaN is left out of one mean and counts 1.0 in the other.
    assert everything.loc["IRF", "dice_mean_with_fluid"] == pytest.approx((4 / 7 + 0) / 2)
    assert everything.loc["IRF", "dice_mean_all"] == pytest.approx((4 / 7 + 1 + 0) / 3)
    assert everything.loc["IRF", "n_with_fluid"] == 2 and everything.loc["IRF", "n_cases"] == 3
    assert everything.loc["IRF", "abs_volume_diff_mean_mm3"] == pytest.approx((0.25 + 0 + 0.5) / 3)
    # IRF presence 1, 0, 0 against reference 1, 0, 1: (1 + 1/2) / 2 pairs.
    assert everything.loc["IRF", "auc"] == pytest.approx(0.75)
    assert everything.loc["SRF", "dice_mean_with_fluid"] == pytest.approx(0.5)
    assert everything.loc["SRF", "dice_mean_all"] == pytest.approx(2 / 3)
    assert everything.loc["SRF", "auc"] == pytest.approx(0.75)
    assert everything.loc["PED", "dice_mean_with_fluid"] == 1.0 and everything.loc["PED", "auc"] == 1.0
    cirrus = summary[summary["vendor"] == "Cirrus"].set_index("fluid")
    assert cirrus.loc["IRF", "dice_mean_with_fluid"] == pytest.approx(4 / 7)
    assert cirrus.loc["IRF", "dice_mean_all"] == pytest.approx((4 / 7 + 1) / 2)
    # The only Spectralis case has IRF: all positive, AUC undefined.
    assert math.isnan(summary[(summary["vendor"] == "Spectralis") & (summary["fluid"] == "IRF")]["auc"].item())
    assert list(summary["vendor"].unique()) == ["Cirrus", "Spectralis", "all"]

    saved = json.loads((layout / "pred" / "evaluation" / "config.json").read_text())
    assert saved["FLUIDS"] == config.FLUIDS
    printed = capsys.readouterr()
    assert "dice_mean_with_fluid" in printed.out and "presence scores from the predicted label volumes" in printed.out
    # every fluid merged over the three cases: TP 4 + 3 + 0, predicted 5 + 5 + 0, reference 6 + 3 + 2 -> 14 / 21
    assert "every fluid merged, Dice pooled over the voxels of all cases: 0.667" in printed.out


def test_perfect_prediction(tmp_path):
    reference = labels(IRF=[(0, 1, 1)], SRF=[(1, 0, 0), (1, 0, 1)], PED=[(1, 3, 4)])
    write_case(tmp_path, "TRAIN050", "Topcon", reference, reference.copy())
    per_case, summary = run(tmp_path)
    assert (per_case["dice"] == 1.0).all() and (per_case["abs_volume_diff_mm3"] == 0.0).all()
    assert (summary["dice_mean_all"] == 1.0).all()


def test_presence_scores_from_volumes_csv(layout, capsys):
    (layout / "pred" / "volumes.csv").write_text(
        "case,vendor,n_bscans,IRF_volume_mm3,SRF_volume_mm3,PED_volume_mm3,IRF_presence,SRF_presence,PED_presence\n"
        "TRAIN001,Cirrus,2,0.75,0.5,0,0.8,0.9,0.1\n"
        "TRAIN002,Cirrus,2,0,0.5,0.75,0.4,0.6,0.7\n")  # TRAIN025 missing: its label volume is used
    per_case, summary = run(layout, "--out", str(layout / "pred" / "evaluation"))
    assert cell(per_case, case="TRAIN001", fluid="IRF", column="presence_score") == 0.8
    assert cell(per_case, case="TRAIN025", fluid="IRF", column="presence_score") == 0.0
    # IRF scores 0.8, 0.4, 0.0 against reference 1, 0, 1: 0.8 > 0.4, 0.0 < 0.4.
    assert cell(summary, vendor="all", fluid="IRF", column="auc") == pytest.approx(0.5)
    printed = capsys.readouterr()
    assert "volumes.csv" in printed.out
    assert "1 case(s) not in" in printed.err and "TRAIN025" in printed.err


def test_size_mismatch_names_file_exits_nonzero_and_scores_the_rest(layout, capsys):
    bad = layout / "pred" / "TRAIN002" / "segmentation.mhd"
    write_volume(bad, labels(shape=(2, 4, 6)), GEOMETRY)
    assert evaluate.main(["--pred", str(layout / "pred"), "--data-root", str(layout / "data")]) == 1
    errors = capsys.readouterr().err
    assert f"error: {bad}: size (z, y, x) (2, 4, 6) differs" in errors
    per_case = pd.read_csv(layout / "pred" / "evaluation" / "per_case.csv")
    assert sorted(per_case["case"].unique()) == ["TRAIN001", "TRAIN025"]
    summary = pd.read_csv(layout / "pred" / "evaluation" / "summary.csv")
    assert cell(summary, vendor="all", fluid="IRF", column="n_cases") == 2


def test_missing_prediction_and_reference_warn(layout, capsys):
    write_case(layout, "TRAIN003", "Cirrus", labels(), None)  # reference, no prediction
    write_volume(layout / "pred" / "TRAIN099" / "segmentation.mhd", labels(), GEOMETRY)  # no such case
    per_case, _ = run(layout)  # warnings only: exit status 0
    assert sorted(per_case["case"].unique()) == ["TRAIN001", "TRAIN002", "TRAIN025"]
    errors = capsys.readouterr().err
    assert "reference but no" in errors and "TRAIN003" in errors
    assert "without a reference" in errors and "TRAIN099" in errors


def test_split_file_filters_cases(layout, capsys):
    split = layout / "split.csv"
    split.write_text("case,vendor,root,split\nTRAIN001,Cirrus,data,test\nTRAIN002,Cirrus,data,train\n"
                     "TRAIN025,Spectralis,data,test\n")
    per_case, summary = run(layout, "--split-file", str(split))
    assert sorted(per_case["case"].unique()) == ["TRAIN001", "TRAIN025"]
    assert cell(summary, vendor="all", fluid="IRF", column="n_cases") == 2
    per_case, _ = run(layout, "--split-file", str(split), "--split", "train")
    assert sorted(per_case["case"].unique()) == ["TRAIN002"]
    assert "without a reference" not in capsys.readouterr().err  # other splits' predictions are not warned about


def evaluate_status(root, *extra):
    return evaluate.main(["--pred", str(root / "pred"), "--data-root", str(root / "data"), *extra])


def test_bad_arguments(layout, capsys):
    with pytest.raises(SystemExit) as exit_info:  # argparse: usage and one error line, status 2
        run(layout, "--split", "test")
    assert exit_info.value.code == 2
    capsys.readouterr()
    for override, message in [("FLUID={}", "did you mean FLUIDS?"), ("SPACING_RTOL=tight", "expected a float"),
                              ("DEVICE=gpu", "DEVICE='gpu': expected one of auto, cpu, cuda")]:
        assert evaluate_status(layout, "--set", override) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err  # one line, no traceback
    assert not (layout / "pred" / "evaluation").exists()
    split = layout / "split.csv"
    split.write_text("case,split\nTRAIN001,train\n")
    assert evaluate.main(["--pred", str(layout / "pred"), "--data-root", str(layout / "data"),
                          "--split-file", str(split)]) == 1
    assert "no case of split 'test'" in capsys.readouterr().err


def test_file_names_follow_the_config(tmp_path):
    reference = labels(IRF=[(0, 1, 1)])
    write_case(tmp_path, "TRAIN050", "Topcon", reference, None)
    write_volume(tmp_path / "pred" / "TRAIN050" / "labels.mhd", reference, GEOMETRY)
    assert evaluate_status(tmp_path, "--set", "SEGMENTATION_FILE=labels.mhd", "--set", "CONFIG_JSON=settings.json") == 0
    out = tmp_path / "pred" / "evaluation"
    assert sorted(path.name for path in out.iterdir()) == ["per_case.csv", "settings.json", "summary.csv"]
    assert pd.read_csv(out / "per_case.csv")["case"].unique().tolist() == ["TRAIN050"]


@pytest.mark.parametrize("out", ["data", "data/Cirrus/TRAIN001", "pred"])
def test_out_never_lands_in_the_data_or_onto_the_predictions(layout, capsys, out):
    import hashlib

    root = layout
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "data").rglob("*"))
              if p.is_file()}
    assert evaluate_status(root, "--out", str(root / out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {root / out}: --out ")
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / "data").rglob("*")) if p.is_file()}
    assert after == before and not (root / "pred" / "per_case.csv").exists()


def test_predictions_in_other_formats_are_found(layout):
    """predict.py --format nii.gz / mha writes segmentation.nii.gz / .mha: evaluate.py scores them as .mhd."""
    mhd_per_case, _ = run(layout)
    for name, fmt in (("TRAIN001", "nii.gz"), ("TRAIN002", "mha")):
        prediction = CASES[name][2]
        for file in ("segmentation.mhd", "segmentation.raw"):
            (layout / "pred" / name / file).unlink()
        write_volume(layout / "pred" / name / f"segmentation.{fmt}", prediction, GEOMETRY)
    per_case, _ = run(layout)
    pd.testing.assert_frame_equal(per_case, mhd_per_case)


def test_unusable_case_under_the_data_root_is_an_error_and_the_others_are_scored(layout, capsys):
    bad = layout / "data" / "scans" / "P9" / "oct.mhd"  # no vendor in its path, and not a header SimpleITK reads
    bad.parent.mkdir(parents=True)
    bad.write_text("not a header\n")
    assert evaluate_status(layout) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert any(str(bad) in line for line in errors)
    per_case = pd.read_csv(layout / "pred" / "evaluation" / "per_case.csv", dtype={"case": str})
    assert sorted(per_case["case"].unique()) == sorted(CASES)


def test_model_settings_come_from_the_prediction_folder_and_local_ones_from_the_command_line(tmp_path, capsys):
    # a model trained with IRF coded 3 and PED 1: predict.py wrote its settings as config.json beside the labels
    model = ["SEGMENTATION_FILE=labels.mhd", "IRF=3", "PED=1", "FLUIDS={'IRF': 3, 'SRF': 2, 'PED': 1}"]
    volume = np.zeros(SHAPE, np.uint8)
    volume[0, 1, 1] = volume[0, 1, 2] = 3  # two voxels of IRF in the model's codes
    volume[1, 2, 2] = 1  # one voxel of PED
    write_case(tmp_path, "TRAIN050", "Topcon", volume, None)
    write_volume(tmp_path / "pred" / "TRAIN050" / "labels.mhd", volume, GEOMETRY)
    (tmp_path / "pred" / "config.json").write_text(json.dumps(config_to_dict(load_config(model))))
    assert evaluate_status(tmp_path, "--set", "SEGMENTATION_FILE=other.mhd", "--set", "SPACING_RTOL=0.01") == 0
    printed = capsys.readouterr()
    assert f"model settings (label codes, file names) from {tmp_path / 'pred' / 'config.json'}" in printed.out
    assert "note: --set SEGMENTATION_FILE='other.mhd' ignored" in printed.err
    evaluation = json.loads((tmp_path / "pred" / "evaluation" / "config.json").read_text())
    assert evaluation["SEGMENTATION_FILE"] == "labels.mhd" and evaluation["FLUIDS"] == {"IRF": 3, "SRF": 2, "PED": 1}
    assert evaluation["SPACING_RTOL"] == 0.01  # a setting of this command: the command line's
    per_case = pd.read_csv(tmp_path / "pred" / "evaluation" / "per_case.csv").set_index("fluid")
    assert per_case.loc["IRF", "reference_volume_mm3"] == pytest.approx(2 * 0.25)
    assert per_case.loc["PED", "reference_volume_mm3"] == pytest.approx(0.25)
    # without config.json (labels of another program) config.py's settings read the same volumes, said so
    (tmp_path / "pred" / "config.json").unlink()
    write_volume(tmp_path / "pred" / "TRAIN050" / "segmentation.mhd", volume, GEOMETRY)
    assert evaluate_status(tmp_path) == 0
    assert "model settings (label codes, file names) from config.py (no " in capsys.readouterr().out
    per_case = pd.read_csv(tmp_path / "pred" / "evaluation" / "per_case.csv").set_index("fluid")
    assert per_case.loc["IRF", "reference_volume_mm3"] == pytest.approx(0.25)  # code 1: IRF in config.py


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"FLUIDS": {"IRF": 1, "SRF": 1, "PED": 3}}'])
def test_a_damaged_prediction_config_is_one_line_naming_it(layout, capsys, content):
    (layout / "pred" / "config.json").write_text(content)
    assert evaluate_status(layout) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {layout / 'pred' / 'config.json'}: ")
    assert not (layout / "pred" / "evaluation").exists()
