"""predict.py's output folder: refused where it would overwrite data, a checkpoint or another program's files;
created, held by this run alone (its run lock), cleared of an interrupted run's temporaries and given the config
before any case is segmented."""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path
from typing import Iterator

import torch.distributed as dist

from utils.configuration import ConfigError, save_config
from utils.io.cases import Case
from utils.io.files import error_line, remove_stale_temporaries
from utils.io.outputs import check_outputs
from utils.io.run_lock import FolderInUse, run_lock
from utils.model.runtime import Runtime
from utils.predict.markers import MARKER_FILE
from utils.predict.settings import PredictSettings
from utils.predict.tables import volumes_columns

RUN_LOCK = ".predict.lock"  # in the output folder: held by the run writing it (utils/io/run_lock.py)


def vendor_data_root(case: Case) -> Path | None:
    """The data root a case lies in: the folder holding its vendor folder (the nearest folder above the case folder
    whose name names the case's vendor, as ``DATA/RETOUCH-TrainingSet-<Vendor>/<case>/oct.mhd`` or
    ``DATA/<Vendor>/<file>.img``), or None when no folder above it names the vendor."""
    case_dir = case.oct_path.resolve().parent
    folders = case_dir.parents if case.oct_path.name == "oct.mhd" else (case_dir, *case_dir.parents)
    for folder in folders:
        if case.vendor.lower() in folder.name.lower():
            return folder.parent if folder.parent != folder.parent.parent else None  # never the file system's root
    return None


def check_out_dir(out_dir: Path, cases: list[Case], inputs: list[Path], settings: PredictSettings,
                  checkpoint_paths: Path | list[Path], local_data_root: str | Path | None = None) -> None:
    """Refuses an output folder in (or below) the data or an input, onto a checkpoint, or one that holds
    another program's ``config.json``/``volumes.csv`` (a training run, an evaluation, someone's notes).

    The data: each input, the data root each case lies in (:func:`vendor_data_root`), ``local_data_root`` (this
    machine's ``DATA_ROOT``: config.py or ``--set``), the checkpoint's ``DATA_ROOT`` (``settings.data_root``) and
    the prepared slices under ``settings.work_dir``; symbolic links are followed, so an ``--out`` that is a link into
    the data, or holds one where a case's outputs would go, is refused too. ``settings`` also names the run's
    ``config_json`` and ``volumes_csv`` and the fluids (``volumes.csv``'s columns).

    The files are predict.py's when a case marker is there, when ``volumes.csv`` has predict.py's columns, or when
    the folder has predict.py's lock file: a run writes ``config.json`` before its first marker, and a run killed in
    between has left only that and the lock file, which predict.py creates only in a folder that passed this check.

    Raises:
        ConfigError: naming the folder and what it would overwrite.
    """
    roots = [("input folder" if path.is_dir() else "folder of the input", path if path.is_dir() else path.parent)
             for path in inputs if path.exists()]
    roots += [("folder of the input", case.oct_path.parent) for case in cases]
    roots += [("data root", root) for root in sorted({vendor_data_root(case) for case in cases} - {None})]
    roots += [("data root", settings.data_root), ("data root", local_data_root),
              ("prepared slices folder", Path(settings.work_dir) / settings.preprocess.slice_layout.slices_subdir)]
    paths = [checkpoint_paths] if isinstance(checkpoint_paths, Path) else list(checkpoint_paths)
    check_outputs([("--out", out_dir)], roots, [item for path in paths for item in (
        ("--checkpoint", path), ("--checkpoint's run folder", path.parent))])
    check_outputs([(f"--out's entry {out_dir / case.name}", out_dir / case.name) for case in cases
                   if (out_dir / case.name).is_symlink()], roots)
    resolved = out_dir.resolve()
    for case in cases:
        if (resolved / case.name) == case.oct_path.resolve().parent:
            raise ConfigError(f"{out_dir}: --out would write into the input's folder {case.oct_path.parent}; "
                              f"choose a folder outside the data")
    for path in inputs:  # every case lies in or below an input, whose ancestors or insides are refused here
        if path.exists() and resolved in path.resolve().parents:
            raise ConfigError(f"{out_dir}: --out contains the input {path}, so its tables and case folders would "
                              f"land among the data; choose a folder that holds no input")
    ours = (any(out_dir.glob(f"*/{MARKER_FILE}")) or (out_dir / RUN_LOCK).is_file()
            or _csv_header(out_dir / settings.volumes_csv) == volumes_columns(settings.fluids))
    foreign = [name for name in (settings.config_json, settings.volumes_csv) if (out_dir / name).exists()]
    if foreign and not ours:
        raise ConfigError(f"{out_dir}: --out holds a {' and a '.join(foreign)} that predict.py did not write (no "
                          f"<case>/{MARKER_FILE} beside it); choose an empty or new folder")


def _csv_header(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return None


@contextlib.contextmanager
def prepare_out_dir(out_dir: Path, effective_config: types.SimpleNamespace, config_json: str, runtime: Runtime
                    ) -> Iterator[int]:
    """Holds ``out_dir`` for this run while the block runs: creates it, takes its run lock (``RUN_LOCK``), removes an
    interrupted run's temporaries and saves ``effective_config`` whole (the run's settings, for evaluate.py and for
    reproducing the run; no setting of it is read here) as ``out_dir / config_json`` (``CONFIG_JSON``). Yields 0,
    2 after one line when another run holds the folder (nothing in it changed), or 1 after one line when the folder
    cannot be written.

    Under torchrun the ranks of one launch share ``out_dir``, so the launch takes one lock: rank 0 takes it and holds
    it until the block ends (after it has written the tables, which it does alone once every rank is done), and
    tells the other ranks whether it got it; they never open the lock file, so a launch cannot refuse itself, and
    when another run holds the folder every rank of the launch yields 2.
    """
    status = 0
    with contextlib.ExitStack() as held:
        if runtime.is_main:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                held.enter_context(run_lock(out_dir / RUN_LOCK, "predict.py", "--out"))
                removed = remove_stale_temporaries(out_dir)
                save_config(effective_config, out_dir / config_json)
                if removed:
                    print(f"note: removed {len(removed)} temporary file(s) an interrupted run left in {out_dir}")
            except FolderInUse as error:
                print(f"error: {error}", file=sys.stderr)
                status = 2
            except OSError as error:
                print(f"error: {error_line(error)}; --out {out_dir} cannot be written", file=sys.stderr)
                status = 1
        if runtime.distributed:
            shared = [status]
            dist.broadcast_object_list(shared, src=0)
            status = shared[0]
        yield status
