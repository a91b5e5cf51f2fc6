"""prepare_data.py holds its work dir for the whole run: a second run on it is refused at once, and a killed run's
lock file never blocks."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import prepare_data

pytest.importorskip("fcntl")

REPO = Path(__file__).resolve().parents[2]
# Takes the run lock as another prepare_data.py run would, says so, and sleeps until it is killed.
HOLDER = ("import sys, time\n"
          "from utils.io.run_lock import run_lock\n"
          "with run_lock(sys.argv[1], 'prepare_data.py', '--work-dir'):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(600)\n")


def _snapshot(folder: Path) -> dict:
    """Every path below ``folder`` with its modification time and (files) content."""
    return {path: (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None)
            for path in sorted(folder.rglob("*"))}


def test_a_second_run_is_refused_while_the_first_holds_the_work_dir_and_proceeds_once_it_is_killed(
        prepared_work, tmp_path, capsys):
    data, work = prepared_work.parent / "data", tmp_path / "work"
    shutil.copytree(prepared_work, work)  # a prepared work dir of our own (the session's must not change)
    other_run = subprocess.Popen([sys.executable, "-c", HOLDER, str(work / prepare_data.RUN_LOCK)], cwd=REPO,
                                 text=True, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert other_run.stdout.readline().strip() == "held"
        before = _snapshot(work)
        arguments = ["--data-root", str(data), "--work-dir", str(work), "--workers", "1"]
        for steps in ([], ["split"]):  # every step; one step (no preprocess) on a prepared work dir
            assert prepare_data.main([*arguments, "--set", "SPLIT_SEED=7", *steps]) == 2
            captured = capsys.readouterr()
            err = captured.err.strip().splitlines()
            assert len(err) == 1 and not captured.out, captured
            assert err[0].startswith(f"error: --work-dir {work} is in use by another run (prepare_data.py, pid "
                                     f"{other_run.pid} on ")
            assert "started 20" in err[0] and err[0].endswith("run them one after the other")
            assert _snapshot(work) == before  # nothing written, nothing removed

        other_run.kill()  # SIGKILL: its lock file stays, naming it, but the kernel has released the lock
        other_run.wait()
        assert json.loads((work / prepare_data.RUN_LOCK).read_text())["pid"] == other_run.pid
        assert prepare_data.main([*arguments, "--set", "SPLIT_SEED=7"]) == 0
        assert json.loads((work / prepare_data.CONFIG_JSON).read_text())["SPLIT_SEED"] == 7
    finally:
        other_run.kill()
        other_run.wait()
