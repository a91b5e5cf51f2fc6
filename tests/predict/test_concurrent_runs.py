"""predict.py holds its --out for the whole run: a second run on the folder is refused at once, a killed run's lock
file never blocks, and a run killed between config.json and its first case marker reruns to the same outputs."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import config
import predict
from utils.configuration import config_to_dict, load_config
from utils.io.mhd_io import Geometry, write_volume
from utils.io.vendor_files import VendorFileSettings
from utils.model.checkpoints import load_checkpoint, save_checkpoint
from utils.model.networks import build_unet
from utils.model.runtime import Runtime
from utils.predict.markers import MARKER_FILE
from utils.predict.out_dir import RUN_LOCK, prepare_out_dir
from utils.predict.settings import inference_config
from utils.prepare.preprocessing import histogram_reference
from volume_factory import TINY_SPECS, tiny_volume

pytest.importorskip("fcntl")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[2]
UNET = {"encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3, "classes": config.N_CLASSES}
# Takes the run lock as another predict.py run would, says so, and sleeps until it is killed.
HOLDER = ("import sys, time\n"
          "from utils.io.run_lock import run_lock\n"
          "with run_lock(sys.argv[1], 'predict.py', '--out'):\n"
          "    print('held', flush=True)\n"
          "    time.sleep(600)\n")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two tiny cases in the RETOUCH layout."""
    root = tmp_path_factory.mktemp("concurrent") / "data"
    rng = np.random.default_rng(11)
    for number, vendor in enumerate(("Cirrus", "Spectralis"), 1):
        write_volume(root / f"RETOUCH-TrainingSet-{vendor}" / f"TRAIN{number:03d}" / "oct.mhd",
                     tiny_volume(vendor, rng), Geometry(spacing_mm=TINY_SPECS[vendor][2]))
    return root


def _checkpoint(data, folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    path = folder / "runs" / f"seed{seed}" / "best.pt"
    cfg = load_config(["SPECTRALIS_AXIAL_SPACING_MM=0.03"])
    save_checkpoint(path, {"model_args": UNET, "model_state": build_unet(UNET).state_dict(), "epoch": 1,
                           "config": config_to_dict(cfg), "metrics": {},
                           "histogram_reference": histogram_reference(next(data.glob("*Spectralis/*/oct.mhd")),
                                                                      VendorFileSettings())})
    return path


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory):
    """Two checkpoints of different random weights (runs A and B of the audit)."""
    folder = tmp_path_factory.mktemp("work")
    return _checkpoint(data, folder, 0), _checkpoint(data, folder, 1)


@pytest.fixture
def holder():
    """Starts a process holding the run lock of a folder; killed at the end of the test if still running."""
    started = []

    def start(lock_path: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)], cwd=REPO, text=True,
                                   stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()


def _snapshot(folder: Path) -> dict:
    """Every path below ``folder`` with its modification time and (files) content."""
    return {path: (path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None)
            for path in sorted(folder.rglob("*"))}


def _predict(checkpoint: Path, out: Path, data: Path) -> int:
    return predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set", "DEVICE=cpu", str(data)])


def test_a_second_run_is_refused_while_the_first_holds_out_and_proceeds_once_it_is_killed(data, checkpoints, tmp_path,
                                                                                           capsys, holder):
    first, second = checkpoints
    out = tmp_path / "pred"
    assert _predict(first, out, data) == 0  # the folder holds run A's cases
    other_run = holder(out / RUN_LOCK)  # run A again, still running
    before = _snapshot(out)
    capsys.readouterr()
    assert _predict(second, out, data) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"error: --out {out} is in use by another run (predict.py, pid {other_run.pid} on ")
    assert "started 20" in err[0] and err[0].endswith("run them one after the other")
    assert _snapshot(out) == before  # nothing written, nothing removed, A's cases untouched

    other_run.kill()  # SIGKILL: its lock file stays, naming it, but the kernel has released the lock
    other_run.wait()
    assert json.loads((out / RUN_LOCK).read_text())["pid"] == other_run.pid
    assert _predict(second, out, data) == 0
    markers = [json.loads(path.read_text()) for path in sorted(out.glob(f"*/{MARKER_FILE}"))]
    assert len(markers) == 2 and all(marker["checkpoint"] == str(second.resolve()) for marker in markers)
    assert json.loads((out / RUN_LOCK).read_text())["pid"] == os.getpid()  # the last holder's record


def test_a_run_killed_after_config_json_before_any_marker_reruns_to_the_same_outputs(data, checkpoints, tmp_path):
    first, _ = checkpoints
    out = tmp_path / "interrupted"
    cfg, _ = inference_config(load_checkpoint(first), load_config(["DEVICE=cpu"]), ["DEVICE"])
    runtime = Runtime(torch.device("cpu"), None, False)
    with prepare_out_dir(out, cfg, cfg.CONFIG_JSON, runtime) as status:  # the killed run's start
        assert status == 0
    assert (out / config.CONFIG_JSON).is_file() and not list(out.glob(f"*/{MARKER_FILE}"))
    assert _predict(first, out, data) == 0
    assert _predict(first, tmp_path / "uninterrupted", data) == 0

    def files(folder):
        return {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*")
                if path.is_file() and path.name != RUN_LOCK}

    assert files(out) == files(tmp_path / "uninterrupted")


def test_a_torchrun_launch_is_refused_on_every_rank_while_another_run_holds_out(data, checkpoints, tmp_path,
                                                                                 holder):
    out = tmp_path / "pred"
    out.mkdir()
    other_run = holder(out / RUN_LOCK)
    before = _snapshot(out)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # the two ranks of one launch as torchrun starts them (its agent would stop rank 1 once rank 0 ends, hiding a hang)
    ranks = [subprocess.Popen([sys.executable, str(REPO / "predict.py"), "--checkpoint", str(checkpoints[0]), "--out",
                               str(out), "--set", "DEVICE=cpu", str(data)], cwd=tmp_path, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO),
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
                                   "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2"})
             for rank in (0, 1)]
    try:
        results = [(*rank.communicate(timeout=240), rank.returncode) for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    (stdout_0, stderr_0, status_0), (stdout_1, stderr_1, status_1) = results
    assert status_0 == 2 and status_1 == 2, stderr_0[-2000:] + stderr_1[-2000:]
    err = [line for line in stderr_0.splitlines() if line.startswith("error")]
    assert err == [line for line in stderr_0.splitlines() if line.strip()], stderr_0  # rank 0: one line, no trace
    assert len(err) == 1 and f"is in use by another run (predict.py, pid {other_run.pid} on " in err[0]
    assert "error" not in stderr_1 and "case(s)" not in stdout_0 + stdout_1, stderr_1  # rank 1: out quietly
    assert _snapshot(out) == before
