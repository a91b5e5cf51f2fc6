"""utils/predict/tables.py: volumes.csv gathered from the case markers, written in turn by runs sharing a folder."""

import errno
import threading
import time
from pathlib import Path

import pytest

import config
from utils.io.cases import Case
from utils.io.files import read_csv_table
from utils.predict import etdrs
from utils.predict.markers import run_identity, write_marker
from utils.predict.settings import PredictSettings
from utils.predict.tables import TABLES_LOCK, write_run_tables

SETTINGS = PredictSettings()  # config.py's


def _row(name: str) -> dict:
    return {"case": name, "vendor": "Cirrus", "n_bscans": 2, **dict.fromkeys(etdrs.etdrs_columns(list(config.FLUIDS)),
                                                                                 0.0)}


def _finish(out_dir: Path, identity: dict, name: str) -> None:
    write_marker(out_dir / name, identity, Case(name, "Cirrus", out_dir.parent / name / "oct.mhd", None), _row(name))


def test_a_run_waits_for_the_other_runs_tables_and_then_sees_its_cases(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    out_dir = tmp_path / "out"
    (tmp_path / "best.pt").write_bytes(b"weights")
    identity = run_identity(tmp_path / "best.pt", {"epoch": 1}, SETTINGS)
    _finish(out_dir, identity, "TRAIN001")
    tables = []
    with open(out_dir / TABLES_LOCK, "a") as other_run:  # another predict.py run writing its tables
        fcntl.flock(other_run, fcntl.LOCK_EX)
        writer = threading.Thread(target=lambda: tables.append(write_run_tables(out_dir, identity, SETTINGS, False)))
        writer.start()
        time.sleep(0.3)
        assert writer.is_alive() and not (out_dir / config.VOLUMES_CSV).exists()
        _finish(out_dir, identity, "TRAIN002")  # the other run's case, finished before it releases the lock
        fcntl.flock(other_run, fcntl.LOCK_UN)
    writer.join(timeout=10)
    assert list(tables[0]["case"]) == ["TRAIN001", "TRAIN002"]
    assert list(read_csv_table(out_dir / config.VOLUMES_CSV)["case"]) == ["TRAIN001", "TRAIN002"]
    assert (out_dir / config.ITKSNAP_LABELS_FILE).is_file()


def test_an_unwritable_folder_gives_one_error_line(tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.write_text("a file, not a folder")
    assert write_run_tables(out_dir, {}, SETTINGS, False) is None
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and "volumes.csv not written" in error


def test_a_file_system_without_locks_still_gets_its_tables(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    out_dir = tmp_path / "out"
    (tmp_path / "best.pt").write_bytes(b"weights")
    identity = run_identity(tmp_path / "best.pt", {"epoch": 1}, SETTINGS)
    _finish(out_dir, identity, "TRAIN001")
    assert list(write_run_tables(out_dir, identity, SETTINGS, False)["case"]) == ["TRAIN001"]
