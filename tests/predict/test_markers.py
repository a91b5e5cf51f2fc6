"""utils/predict/markers.py: a case counts as finished only with a matching marker and its files in place."""

from pathlib import Path

import numpy as np

import config
from utils.io.cases import Case
from utils.io.mhd_io import Geometry
from utils.predict import etdrs
from utils.predict.markers import MARKER_FILE, finished_result, remove_marker, run_identity, write_marker
from utils.predict.outputs import Outputs, probability_paths, write_volumes
from utils.predict.settings import PredictSettings

SETTINGS = PredictSettings()  # config.py's

ROW = {"case": "TRAIN001", "vendor": "Cirrus", "n_bscans": 2,
       **dict.fromkeys(etdrs.etdrs_columns(list(config.FLUIDS)), 0.0)}


def _finished_case(tmp_path: Path, outputs: Outputs) -> tuple[Case, Path, dict]:
    oct_path = tmp_path / "data" / "TRAIN001" / "oct.mhd"
    oct_path.parent.mkdir(parents=True)
    oct_path.write_text("header")
    case = Case("TRAIN001", "Cirrus", oct_path, None)
    case_dir = tmp_path / "out" / case.name
    (tmp_path / "best.pt").write_bytes(b"weights of epoch 3")
    identity = run_identity(tmp_path / "best.pt", {"epoch": 3}, SETTINGS)
    labels = np.zeros((2, 4, 4), np.uint8)
    probabilities = {fluid: labels for fluid in config.FLUIDS} if outputs.probabilities else None
    write_volumes(case_dir, SETTINGS, outputs, labels, probabilities, Geometry(spacing_mm=(0.1, 0.1, 0.1)))
    write_marker(case_dir, identity, case, ROW)
    return case, case_dir, identity


def test_a_matching_marker_gives_the_saved_row(tmp_path):
    case, case_dir, identity = _finished_case(tmp_path, Outputs())
    assert finished_result(case, case_dir, identity, SETTINGS) == ROW
    assert finished_result(case, case_dir, identity, SETTINGS, Outputs(format="nii.gz")) is None  # not that format
    assert finished_result(case, case_dir, identity, SETTINGS, Outputs(probabilities=True)) is None  # none written
    other = run_identity(tmp_path / "best.pt", {"epoch": 4}, SETTINGS)
    assert finished_result(case, case_dir, other, SETTINGS) is None
    moved = Case(case.name, case.vendor, tmp_path / "oct.mhd", None)
    assert finished_result(moved, case_dir, identity, SETTINGS) is None
    remove_marker(case_dir)
    assert not (case_dir / MARKER_FILE).exists() and finished_result(case, case_dir, identity, SETTINGS) is None


def test_a_checkpoint_retrained_in_place_is_not_taken_for_the_old_one(tmp_path):
    case, case_dir, identity = _finished_case(tmp_path, Outputs())
    (tmp_path / "best.pt").write_bytes(b"weights of another run's epoch 3")  # same path, same epoch
    retrained = run_identity(tmp_path / "best.pt", {"epoch": 3}, SETTINGS)
    assert finished_result(case, case_dir, retrained, SETTINGS) is None


def test_a_row_without_todays_columns_is_redone(tmp_path):
    case, case_dir, identity = _finished_case(tmp_path, Outputs())
    older = {key: value for key, value in ROW.items() if key != "laterality"}  # before the laterality column
    write_marker(case_dir, identity, case, older)
    assert finished_result(case, case_dir, identity, SETTINGS) is None


def test_probability_volumes_count_when_asked_for(tmp_path):
    outputs = Outputs(probabilities=True)
    case, case_dir, identity = _finished_case(tmp_path, outputs)
    assert finished_result(case, case_dir, identity, SETTINGS, outputs) == ROW
    srf = probability_paths(case_dir, config.PROBABILITY_FILE, config.FLUIDS, outputs.format)["SRF"]
    srf.with_suffix(".raw").unlink()
    assert finished_result(case, case_dir, identity, SETTINGS, outputs) is None
