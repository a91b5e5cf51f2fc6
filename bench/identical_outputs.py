"""Whether a change leaves the pipeline's outputs identical: SHA-256 of every file prepare_data.py, predict.py and
evaluate.py write on the small synthetic set, and of the weights two short seeded train.py runs learn; and a
comparison of two such records.

    python bench/identical_outputs.py --out HASHES.json [--repo DIR] [--work DIR]
    python bench/identical_outputs.py --compare A.json B.json

With the code of ``--repo`` (default: this checkout; e.g. ``git archive HEAD | tar -x -C /tmp/base`` for the code
before a change), the interpreter running this script, one torch thread and the CPU, under WORK (default: a
temporary folder, removed afterwards):

1. ``python -m utils.synthetic --small --out WORK/data`` (6 cases per vendor, 8 B-scans each);
2. ``prepare_data.py --data-root WORK/data --work-dir WORK/prepared --workers 1``;
3. ``WORK/checkpoints/<network>.pt`` for rmit_unet and smp_unet: fresh weights after ``torch.manual_seed(0)``,
   config.py's settings and the histogram reference prepare_data.py recorded (as tests/test_predict.py's fixture
   builds its checkpoint; no training). They are written with ``torch.save`` at a fixed name, not
   ``save_checkpoint``, whose temporary name ends up inside the archive: so a checkpoint's bytes, and the digest
   predict.py records of it, are the same on every run. The reference's path is relative to WORK for the same
   reason;
4. ``predict.py --save-probabilities --overlays all --report`` on WORK/data into ``WORK/predictions/<run>``, once
   per entry of :data:`PREDICT_RUNS`; between them they take every path of whole-volume inference (the test-time
   band, the unpadded network's centre and its padded input, the ROI, tiles, flip TTA, blank columns);
5. ``evaluate.py --pred WORK/predictions/<run> --data-root WORK/data --out WORK/evaluations/<run>`` for each;
6. ``train.py --work-dir WORK/prepared --run-dir WORK/training/<run>``, once per entry of :data:`TRAIN_RUNS`: two
   epochs of two batches from ``SEED=0`` in fp32, the authors' method and ``--preset improved``. A checkpoint's
   bytes vary from run to run (``torch.save`` archives hold the temporary name it was written under) and
   ``log.csv`` and ``train.log`` hold times, so for these the record holds instead a digest of each checkpoint's
   learned weights (``model_state``, in key order, ``<file>#weights``) and of ``log.csv`` without its ``seconds``
   column (``<file>#values``); ``train.log`` is left out.

Every file under WORK is hashed (the inputs and checkpoints as well, so a difference there shows up) after the
absolute path of WORK, wherever a file spells it (slice_index.csv's ``oct_path``, the case markers
``preprocess.json``, ``roi.json`` and ``prediction.json``, the saved configs), is replaced by ``<WORK>``: two runs in
different folders compare. Left out are the run locks (``.prepare_data.lock``, ``.predict.lock``, ``.tables.lock``):
they hold the pid, host and start time of the run that held them, not outputs. No other output holds a time.

``--compare`` prints each file whose hash differs or that only one record holds, and exits 1 when there is any
(0 when all are identical, 2 on a usage error or a step that failed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL_CASES_PER_VENDOR = 6  # the split needs a few cases per vendor
NETWORKS = ("rmit_unet", "smp_unet")
# predict.py run name -> (network, --set overrides)
PREDICT_RUNS = {
    "rmit_unet-band": ("rmit_unet", []),  # the defaults: the band, the unpadded network's output centre
    "rmit_unet-all-padded": ("rmit_unet", ["PREDICT_REGION=all", "UNPADDED_BORDER=padded"]),
    "smp_unet-roi-tiled": ("smp_unet", ["PREDICT_REGION=roi", "INFERENCE_TILE_SHAPE=(256,128)",
                                        "INFERENCE_TILE_OVERLAP=32", "TTA_FLIP=True",
                                        "BLANK_COLUMNS_BACKGROUND=True"]),
}
# train.py run name -> its --preset (or none) and --set overrides: two epochs of two small batches, fp32, seeded
TRAIN_SETTINGS = ["DEVICE=cpu", "MIXED_PRECISION=False", "SEED=0", "EPOCHS=2", "BATCHES_PER_EPOCH=2",
                  "VAL_BSCANS=4", "VAL_FRESH_PATCHES=False", "LOADER_WORKERS=0"]
TRAIN_RUNS = {
    "rmit_unet": ([], [*TRAIN_SETTINGS, "BATCH_SIZE=2"]),
    "improved": (["--preset", "improved"], [*TRAIN_SETTINGS, "PATCH_SHAPE=(256, 128)", "BATCH_SIZE=2"]),
}
TRAINING_FOLDER = "training"
LOCK_FILES = {".prepare_data.lock", ".predict.lock", ".tables.lock", ".train.lock"}
WORK_PLACEHOLDER = b"<WORK>"

# Run in the repository under test: a fresh network, saved where argv[1] says, for argv[2] (MODEL), with the
# histogram reference of the prepared folder argv[3], its path made relative to argv[4]. The code under test may be
# from before unet_arguments took a NetworkSettings (it took the config then).
CHECKPOINT_CODE = """
import json, sys
from pathlib import Path
import torch
from utils.configuration import config_to_dict, load_config
from utils.model.networks import build_unet, unet_arguments
try:
    from utils.model.networks import NetworkSettings
except ImportError:
    NetworkSettings = None
path, model, prepared, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
cfg = load_config([f"MODEL={model}"])
reference = json.loads((prepared / cfg.HISTOGRAM_REFERENCE_JSON).read_text())
reference["path"] = str(Path(reference["path"]).relative_to(work))
torch.manual_seed(0)
args = unet_arguments(NetworkSettings.from_config(cfg) if NetworkSettings else cfg)
torch.save({"model_args": args, "model_state": build_unet(args).state_dict(), "epoch": 1,
            "config": config_to_dict(cfg), "metrics": {}, "histogram_reference": reference}, path)
"""


class StepFailed(Exception):
    """A pipeline step exited with an error."""


def run_step(name: str, command: list[str], repo: Path) -> None:
    """Runs ``command`` in ``repo`` with one thread; raises StepFailed with the end of its output."""
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    print(f"{name} ...", flush=True)
    done = subprocess.run(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stdout.splitlines()[-15:])
        raise StepFailed(f"{name} exited with {done.returncode}:\n{tail}")


def run_pipeline(repo: Path, work: Path) -> None:
    """Steps 1 to 4 of the module docstring, with the code of ``repo``, under ``work``."""
    python = sys.executable
    data, prepared = work / "data", work / "prepared"
    run_step("synthetic set", [python, "-m", "utils.synthetic", "--small", "--cases-per-vendor",
                               str(SMALL_CASES_PER_VENDOR), "--out", str(data)], repo)
    run_step("prepare_data.py", [python, "prepare_data.py", "--data-root", str(data), "--work-dir", str(prepared),
                                 "--workers", "1"], repo)
    (work / "checkpoints").mkdir()
    for network in NETWORKS:
        run_step(f"checkpoint {network}", [python, "-c", CHECKPOINT_CODE, str(checkpoint_path(work, network)),
                                           network, str(prepared), str(work)], repo)
    for run, (network, settings) in PREDICT_RUNS.items():
        overrides = [option for setting in ["DEVICE=cpu", *settings] for option in ("--set", setting)]
        run_step(f"predict.py {run}", [python, "predict.py", "--checkpoint", str(checkpoint_path(work, network)),
                                       "--out", str(work / "predictions" / run), "--save-probabilities",
                                       "--overlays", "all", "--report", *overrides, str(data)], repo)
        run_step(f"evaluate.py {run}", [python, "evaluate.py", "--pred", str(work / "predictions" / run),
                                        "--data-root", str(data), "--out", str(work / "evaluations" / run)], repo)
    for run, (preset, settings) in TRAIN_RUNS.items():
        overrides = [option for setting in settings for option in ("--set", setting)]
        run_step(f"train.py {run}", [python, "train.py", "--work-dir", str(prepared), "--run-dir",
                                     str(work / TRAINING_FOLDER / run), *preset, *overrides], repo)


def checkpoint_path(work: Path, network: str) -> Path:
    return work / "checkpoints" / f"{network}.pt"


def weights_digest(path: Path) -> str:
    """SHA-256 (hex) of a checkpoint's ``model_state``: each tensor's name, dtype, shape and bytes, in key order."""
    import torch  # only here: recording the other outputs needs no torch in this process

    digest = hashlib.sha256()
    for name, tensor in torch.load(path, map_location="cpu", weights_only=False)["model_state"].items():
        tensor = tensor.detach().contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode("utf-8"))
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def log_digest(path: Path) -> str:
    """SHA-256 (hex) of a ``log.csv`` without its ``seconds`` column."""
    import csv

    with path.open(newline="", encoding="utf-8") as file:
        rows = [{key: value for key, value in row.items() if key != "seconds"} for row in csv.DictReader(file)]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode("utf-8")).hexdigest()


def file_hashes(work: Path) -> dict[str, str]:
    """Relative path -> SHA-256 (hex) of every file under ``work`` but the run locks, with ``work``'s absolute path
    replaced by ``<WORK>`` first; under the training folder, the weights of each checkpoint and the values of
    ``log.csv`` (``train.log`` left out: it holds times)."""
    spelled = str(work.resolve()).encode("utf-8")
    hashes = {}
    for path in sorted(work.rglob("*")):
        if not path.is_file() or path.name in LOCK_FILES:
            continue
        name = path.relative_to(work).as_posix()
        if name.startswith(f"{TRAINING_FOLDER}/") and path.suffix in (".pt", ".log", ".csv"):
            if path.suffix == ".pt":
                hashes[f"{name}#weights"] = weights_digest(path)
            elif path.suffix == ".csv":
                hashes[f"{name}#values"] = log_digest(path)
            continue
        content = path.read_bytes().replace(spelled, WORK_PLACEHOLDER)
        hashes[name] = hashlib.sha256(content).hexdigest()
    return hashes


def differences(a: dict[str, str], b: dict[str, str]) -> list[str]:
    """One line per file whose hash differs, or that only one of ``a`` and ``b`` holds, in path order."""
    lines = []
    for name in sorted(set(a) | set(b)):
        if name not in b:
            lines.append(f"only in the first: {name}")
        elif name not in a:
            lines.append(f"only in the second: {name}")
        elif a[name] != b[name]:
            lines.append(f"differs: {name}")
    return lines


def compare(first: Path, second: Path) -> int:
    """Prints the differences of two records; 1 when there are any, else 0."""
    a, b = (json.loads(path.read_text(encoding="utf-8"))["files"] for path in (first, second))
    lines = differences(a, b)
    for line in lines:
        print(line)
    print(f"{len(set(a) | set(b))} files, {len(lines)} difference(s)")
    return 1 if lines else 0


def record(repo: Path, work: Path | None, out: Path) -> int:
    """Runs the pipeline under ``work`` (a temporary folder when None) and writes the hashes to ``out``."""
    temporary = work is None
    work = Path(tempfile.mkdtemp(prefix="identical_outputs-") if temporary else work).resolve()
    try:
        run_pipeline(repo, work)
        hashes = file_hashes(work)
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    out.write_text(json.dumps({"repo": str(repo), "files": hashes}, indent=1, sort_keys=True) + "\n",
                   encoding="utf-8")
    print(f"{len(hashes)} files hashed into {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="JSON file for the hashes")
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose code runs (default: this one)")
    parser.add_argument("--work", type=Path, help="empty or new folder for the run, kept (default: a temporary "
                                                  "folder, removed)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A.json", "B.json"),
                        help="compare two records instead of making one")
    args = parser.parse_args(argv)
    if args.compare:
        missing = [str(path) for path in args.compare if not path.is_file()]
        if missing:
            parser.error(f"no such record: {', '.join(missing)}")
        return compare(*args.compare)
    if args.out is None:
        parser.error("give --out HASHES.json (or --compare A.json B.json)")
    repo = args.repo.resolve()
    if not (repo / "predict.py").is_file() or not (repo / "prepare_data.py").is_file():
        parser.error(f"--repo {repo}: not a retouch checkout (no predict.py and prepare_data.py there)")
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        parser.error(f"--work {args.work}: not empty; give an empty or new folder")
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    return record(repo, args.work, args.out)


if __name__ == "__main__":
    sys.exit(main())
