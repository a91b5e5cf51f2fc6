"""utils/evaluate/evaluator.py: the Python API scores as evaluate.py does, and its example runs."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import config
import evaluate
from utils.configuration import ConfigError, config_to_dict, load_config
from utils.evaluate import evaluator as evaluator_module
from utils.evaluate.evaluator import evaluate_arrays, evaluate_folder
from utils.evaluate.volume_metrics import read_presence_scores
from utils.io.files import atomic_write_csv
from utils.io.mhd_io import Geometry, VolumeError, read_volume, write_volume
from docs_examples import docstring_example, readme_example

SHAPE = (3, 6, 7)  # (z, y, x)
VENDORS = {"TRAIN001": "Cirrus", "TRAIN002": "Cirrus", "TRAIN003": "Spectralis", "TRAIN004": "Topcon",
           "TRAIN005": "Topcon"}
SPACING = {"Cirrus": (0.047, 0.0417, 0.047), "Spectralis": (0.011, 0.0039, 0.12), "Topcon": (0.047, 0.0523, 0.047)}
SWAPPED = ["IRF=3", "PED=1", "FLUIDS={'IRF': 3, 'SRF': 2, 'PED': 1}"]  # a model trained with other label codes

# The layout's flaws (a case without scores, unmatched cases) are warned about by every call: the tests that are
# about warnings catch them with pytest.warns; the others' are not shown again.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def random_labels(rng: np.random.Generator) -> np.ndarray:
    """A few blocks of random fluids (some fluids absent) on background."""
    labels = np.zeros(SHAPE, np.uint8)
    for _ in range(rng.integers(0, 4)):
        z, y, x = rng.integers(0, SHAPE[0]), rng.integers(0, SHAPE[1] - 2), rng.integers(0, SHAPE[2] - 2)
        labels[z, y:y + rng.integers(1, 3), x:x + rng.integers(1, 3)] = rng.integers(1, 4)
    return labels


def perturbed(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``labels`` with some voxels given another code: a prediction that is partly right."""
    prediction = labels.copy()
    flip = rng.random(SHAPE) < 0.08
    prediction[flip] = rng.integers(0, 4, int(flip.sum()))
    return prediction


@pytest.fixture
def layout(tmp_path):
    """``data/<vendor>/<case>/{oct,reference}.mhd`` and ``pred/<case>/segmentation.mhd`` (predict.py's layout) with
    a ``volumes.csv`` that lacks one case, a prediction of the wrong size, a prediction without reference and a
    reference without prediction."""
    rng = np.random.default_rng(5)
    for name, vendor in VENDORS.items():
        geometry = Geometry(spacing_mm=SPACING[vendor])
        reference = random_labels(rng)
        write_volume(tmp_path / "data" / vendor / name / "oct.mhd", np.full(SHAPE, 9, np.uint8), geometry)
        write_volume(tmp_path / "data" / vendor / name / "reference.mhd", reference, geometry)
        write_volume(tmp_path / "pred" / name / "segmentation.mhd", perturbed(reference, rng), geometry)
    write_volume(tmp_path / "data" / "Cirrus" / "TRAIN006" / "reference.mhd", random_labels(rng),
                 Geometry(spacing_mm=SPACING["Cirrus"]))  # no prediction
    write_volume(tmp_path / "data" / "Cirrus" / "TRAIN006" / "oct.mhd", np.zeros(SHAPE, np.uint8),
                 Geometry(spacing_mm=SPACING["Cirrus"]))
    write_volume(tmp_path / "pred" / "TRAIN099" / "segmentation.mhd", random_labels(rng),
                 Geometry(spacing_mm=SPACING["Cirrus"]))  # no reference
    presence = "".join(f"{name},{vendor},{SHAPE[0]},0,0,0,{rng.random():.3f},{rng.random():.3f},{rng.random():.3f}\n"
                       for name, vendor in list(VENDORS.items())[:-1])  # TRAIN005 missing
    (tmp_path / "pred" / "volumes.csv").write_text(
        "case,vendor,n_bscans,IRF_volume_mm3,SRF_volume_mm3,PED_volume_mm3,IRF_presence,SRF_presence,PED_presence\n"
        + presence)
    return tmp_path


def script_outputs(root: Path, *extra: str, status: int = 0) -> Path:
    """Runs evaluate.py into ``root/out``, checks its exit status and returns the folder."""
    out = root / "out"
    assert evaluate.main(["--pred", str(root / "pred"), "--data-root", str(root / "data"), "--out", str(out),
                          *extra]) == status
    return out


def assert_same_as_script(result, out: Path, printed: str | None, tmp_path: Path) -> None:
    """``result``'s tables are evaluate.py's files byte for byte (written again by its own writer), its settings
    evaluate.py's config.json, and each of its messages one evaluate.py printed (unless ``printed`` is None)."""
    for frame, name in ((result.per_case, evaluate.PER_CASE_CSV), (result.summary, evaluate.SUMMARY_CSV)):
        atomic_write_csv(tmp_path / name, frame)
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert config_to_dict(result.cfg) == json.loads((out / result.cfg.CONFIG_JSON).read_text())
    for line in result.messages if printed is not None else ():
        assert line in printed, line
    if printed is not None:
        assert f"Dice pooled over the voxels of all cases: {result.pooled_fluid_dice:.3f}" in printed


def test_a_folder_scores_to_evaluate_pys_files(layout, tmp_path, capsys):
    bad = layout / "pred" / "TRAIN002" / "segmentation.mhd"
    write_volume(bad, np.zeros((3, 6, 8), np.uint8), Geometry(spacing_mm=SPACING["Cirrus"]))
    out = script_outputs(layout, status=1)
    captured = capsys.readouterr()
    with pytest.warns(UserWarning) as warned:
        result = evaluate_folder(layout / "pred", data_root=layout / "data")
    assert_same_as_script(result, out, captured.out + captured.err, tmp_path)
    assert result.failed == (str(bad),)
    assert f"error: 1 input(s) could not be used: {bad}" in captured.err
    assert [str(warning.message) for warning in warned] == [line for line in result.messages
                                                            if not line.startswith("presence scores from")]
    assert any("TRAIN006" in line for line in result.messages) and any("TRAIN099" in line for line in result.messages)
    assert any(line.startswith(f"error: {bad}: size (z, y, x)") for line in result.messages)
    assert result.presence_source == str(layout / "pred" / "volumes.csv")
    assert sorted(result.per_case["case"].unique()) == ["TRAIN001", "TRAIN003", "TRAIN004", "TRAIN005"]
    assert 0 < result.per_case["dice"].max() and result.per_case["dice"].min() < 1  # partly right, as meant


def test_a_split_scores_as_evaluate_pys_split(layout, tmp_path, capsys):
    split = layout / "split.csv"
    split.write_text("case,split\nTRAIN001,test\nTRAIN002,train\nTRAIN004,test\nTRAIN005,test\nTRAIN007,test\n")
    out = script_outputs(layout, "--split-file", str(split))
    captured = capsys.readouterr()
    with pytest.warns(UserWarning, match="1 case.s. of split 'test'"):
        result = evaluate_folder(layout / "pred", layout / "data", split_file=split)
    assert_same_as_script(result, out, captured.out + captured.err, tmp_path)
    assert sorted(result.per_case["case"].unique()) == ["TRAIN001", "TRAIN004", "TRAIN005"]
    train = evaluate_folder(layout / "pred", layout / "data", split_file=split, split="train")
    assert train.per_case["case"].unique().tolist() == ["TRAIN002"]


def test_model_settings_come_from_the_folders_config_json(layout, tmp_path, capsys):
    (layout / "pred" / "config.json").write_text(json.dumps(config_to_dict(load_config(SWAPPED))))
    out = script_outputs(layout, "--set", "SPACING_RTOL=0.01", "--set", "MEDIAN_INPLANE=5")
    captured = capsys.readouterr()
    assert "note: --set MEDIAN_INPLANE=5 ignored" in captured.err
    with pytest.warns(UserWarning, match="MEDIAN_INPLANE=5 ignored"):
        result = evaluate_folder(layout / "pred", layout / "data", SPACING_RTOL=0.01, MEDIAN_INPLANE=5)
    assert_same_as_script(result, out, captured.out + captured.err, tmp_path)
    assert result.cfg.FLUIDS == {"IRF": 3, "SRF": 2, "PED": 1} and result.cfg.SPACING_RTOL == 0.01
    assert result.settings_source == str(layout / "pred" / "config.json")
    # the codes matter: with config.py's, the same volumes give other numbers
    (layout / "pred" / "config.json").unlink()
    default = evaluate_folder(layout / "pred", layout / "data")
    assert default.settings_source.startswith("config.py")
    assert not default.per_case["reference_volume_mm3"].equals(result.per_case["reference_volume_mm3"])


def test_arrays_score_as_the_files_holding_them(layout, tmp_path):
    out = script_outputs(layout)
    references = {name: read_volume(layout / "data" / vendor / name / "reference.mhd")
                  for name, vendor in VENDORS.items()}
    predictions = {name: read_volume(layout / "pred" / name / "segmentation.mhd") for name in VENDORS}
    presence = read_presence_scores(layout / "pred" / "volumes.csv", config.FLUIDS)  # TRAIN005 lacks scores
    with pytest.warns(UserWarning, match="1 case.s. not in presence.*TRAIN005"):
        result = evaluate_arrays(predictions, references, VENDORS, presence)
    assert_same_as_script(result, out, None, tmp_path)
    # plain arrays lie on their reference's grid
    plain = {name: labels for name, (labels, _) in predictions.items()}
    with pytest.warns(UserWarning, match="TRAIN005"):
        assert evaluate_arrays(plain, references, VENDORS, presence).per_case.equals(result.per_case)
    assert 0 < result.pooled_fluid_dice < 1
    assert result.pooled_fluid_dice == evaluate_folder(layout / "pred", layout / "data").pooled_fluid_dice
    labels_only = evaluate_arrays(plain, references, VENDORS)  # presence from the label volumes, as no volumes.csv
    assert labels_only.per_case["presence_score"].isin([0.0, 1.0]).all()
    assert labels_only.per_case.drop(columns="presence_score").equals(result.per_case.drop(columns="presence_score"))
    assert not labels_only.per_case["presence_score"].equals(result.per_case["presence_score"])


def test_settings_from_a_prediction_folder_follow_evaluate_pys_rule(layout, tmp_path):
    (layout / "pred" / "config.json").write_text(json.dumps(config_to_dict(load_config(SWAPPED))))
    name = "TRAIN001"
    references = {name: read_volume(layout / "data" / VENDORS[name] / name / "reference.mhd")}
    predictions = {name: read_volume(layout / "pred" / name / "segmentation.mhd")[0]}
    with pytest.warns(UserWarning, match="SEGMENTATION_FILE='x.mhd' ignored"):
        swapped = evaluate_arrays(predictions, references, {name: "Cirrus"}, settings_from=layout / "pred",
                                  SEGMENTATION_FILE="x.mhd")
    folder = evaluate_folder(layout / "pred", layout / "data")
    assert swapped.cfg.FLUIDS == folder.cfg.FLUIDS == {"IRF": 3, "SRF": 2, "PED": 1}
    rows = folder.per_case[folder.per_case["case"] == name].reset_index(drop=True)
    assert swapped.per_case.drop(columns="presence_score").equals(rows.drop(columns="presence_score"))


def test_bad_inputs_are_refused_naming_what_was_expected(layout):
    name = "TRAIN001"
    reference, geometry = read_volume(layout / "data" / "Cirrus" / name / "reference.mhd")
    good = ({name: reference}, {name: (reference, geometry)}, {name: "Cirrus"})
    cases = [
        (({name: reference}, {"TRAIN002": (reference, geometry)}, {name: "Cirrus"}), {}, ValueError,
         "expected the same cases"),
        (({name: reference}, {name: (reference, geometry)}, {}), {}, ValueError, "vendors has the cases none"),
        (({name: reference}, {name: reference}, {name: "Cirrus"}), {}, ValueError, r"expected \(labels, geometry\)"),
        (({name: reference}, {name: (reference[0], geometry)}, {name: "Cirrus"}), {}, ValueError,
         r"expected \(z, y, x\)"),
        (({name: reference[:, 1:]}, good[1], good[2]), {}, VolumeError, "case TRAIN001 prediction: size"),
        (({name: reference + 4}, good[1], good[2]), {}, VolumeError, "unexpected label values"),
        (({name: (reference, Geometry(spacing_mm=(1.0, 1.0, 1.0)))}, good[1], good[2]), {}, VolumeError, "spacing"),
        (good, {"presence": {name: {"IRF": 1.5, "SRF": 0, "PED": 0}}}, ValueError, r"expected a number in \[0, 1\]"),
        (good, {"presence": {name: {"IRF": 0.5}}}, ValueError, r"presence\['TRAIN001'\]\['SRF'\] is None"),
        (good, {"SPACING_RTL": 0.1}, ConfigError, "did you mean SPACING_RTOL"),
    ]
    for args, keywords, error, message in cases:
        with pytest.raises(error, match=message):
            evaluate_arrays(*args, **keywords)
    with pytest.raises(FileNotFoundError, match="prediction folder is not a folder"):
        evaluate_folder(layout / "missing", layout / "data")
    with pytest.raises(ValueError, match="needs a split_file"):
        evaluate_folder(layout / "pred", layout / "data", split="test")
    lone = layout / "lone"  # a prediction whose case is not under the data root: the warning tells why
    shutil.copytree(layout / "pred" / "TRAIN099", lone / "TRAIN099")
    with pytest.warns(UserWarning, match="without a reference.mhd .* TRAIN099"):
        with pytest.raises(ValueError, match="no case has both a prediction"):
            evaluate_folder(lone, layout / "data")
    (layout / "pred" / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json: holds a JSON list"):
        evaluate_folder(layout / "pred", layout / "data")


def test_the_readme_shows_the_docstring_example():
    assert readme_example("from utils.evaluate.evaluator import").strip() == docstring_example(evaluator_module).strip()


def test_the_docstring_example_runs(layout, tmp_path, monkeypatch, capsys):
    code = docstring_example(evaluator_module)
    assert len(code.strip().splitlines()) <= 10
    # the files where the example expects them, relative to the folder it runs in
    run = tmp_path / "example"
    shutil.copytree(layout / "data" / "Cirrus" / "TRAIN001", run / "data" / "Cirrus" / "TRAIN001")
    shutil.copytree(layout / "pred" / "TRAIN001", run / "work" / "predictions" / "run1" / "TRAIN001")
    monkeypatch.chdir(run)
    exec(compile(code, "utils/evaluate/evaluator.py", "exec"), {"__name__": "docstring_example"})
    printed = capsys.readouterr().out
    assert "every input used" in printed
    for fluid in config.FLUIDS:  # a row of the summary over all cases, and one of the case's own
        assert len(re.findall(rf"^\d+\s+{fluid}\s", printed, re.M)) == 2, printed
