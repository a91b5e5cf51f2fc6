"""utils/predict/out_dir.py: --out never overwrites the data, the checkpoint or another program's files."""

import pytest

import config
from utils.configuration import ConfigError
from utils.io.cases import Case
from utils.predict.markers import MARKER_FILE
from utils.predict.out_dir import check_out_dir
from utils.predict.settings import PredictSettings


@pytest.fixture
def settings(tmp_path):
    return PredictSettings(work_dir=str(tmp_path / "work"), data_root=str(tmp_path / "data"))


def test_out_in_the_data_or_the_run_folder_is_refused(tmp_path, settings):
    oct_path = tmp_path / "data" / "TRAIN001" / "oct.mhd"
    oct_path.parent.mkdir(parents=True)
    oct_path.write_text("header")
    checkpoint = tmp_path / "work" / "runs" / "r" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    cases = [Case("TRAIN001", "Cirrus", oct_path, None)]
    for out in (tmp_path / "data", tmp_path / "data" / "TRAIN001" / "pred", checkpoint.parent):
        with pytest.raises(ConfigError):
            check_out_dir(out, cases, [oct_path], settings, checkpoint)
    check_out_dir(tmp_path / "out", cases, [oct_path], settings, checkpoint)


def test_out_holding_another_programs_config_is_refused_unless_predict_wrote_it(tmp_path, settings):
    out = tmp_path / "out"
    out.mkdir()
    (out / config.CONFIG_JSON).write_text("{}")
    checkpoint = tmp_path / "work" / "runs" / "r" / "best.pt"
    with pytest.raises(ConfigError, match=f"--out holds a {config.CONFIG_JSON} that predict.py did not write"):
        check_out_dir(out, [], [], settings, checkpoint)
    (out / "TRAIN001").mkdir()
    (out / "TRAIN001" / MARKER_FILE).write_text("{}")
    check_out_dir(out, [], [], settings, checkpoint)
