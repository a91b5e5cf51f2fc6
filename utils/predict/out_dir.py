"""predict.py's output folder: refused where it would overwrite data, a checkpoint or another program's files;
created, cleared of an interrupted run's temporaries and given the config before any case is segmented."""

from __future__ import annotations

import sys
from pathlib import Path

import torch.distributed as dist

from utils.configuration import ConfigError, save_config
from utils.io.cases import Case
from utils.io.files import error_line, remove_stale_temporaries
from utils.io.outputs import check_outputs
from utils.model.runtime import Runtime
from utils.predict.markers import MARKER_FILE
from utils.predict.tables import volumes_columns


def check_out_dir(out_dir: Path, cases: list[Case], inputs: list[Path], cfg,
                  checkpoint_paths: Path | list[Path]) -> None:
    """Refuses an output folder in (or below) the data or an input, onto a checkpoint, or one that holds
    another program's ``config.json``/``volumes.csv`` (a training run, an evaluation, someone's notes).

    Raises:
        ConfigError: naming the folder and what it would overwrite.
    """
    roots = [("input folder" if path.is_dir() else "folder of the input", path if path.is_dir() else path.parent)
             for path in inputs if path.exists()]
    roots += [("folder of the input", case.oct_path.parent) for case in cases]
    roots += [("data root", cfg.DATA_ROOT), ("prepared slices folder", Path(cfg.WORK_DIR) / cfg.SLICES_SUBDIR)]
    paths = [checkpoint_paths] if isinstance(checkpoint_paths, Path) else list(checkpoint_paths)
    check_outputs([("--out", out_dir)], roots, [item for path in paths for item in (
        ("--checkpoint", path), ("--checkpoint's run folder", path.parent))])
    resolved = out_dir.resolve()
    for case in cases:
        if (resolved / case.name) == case.oct_path.resolve().parent:
            raise ConfigError(f"{out_dir}: --out would write into the input's folder {case.oct_path.parent}; "
                              f"choose a folder outside the data")
    for path in inputs:  # every case lies in or below an input, whose ancestors or insides are refused here
        if path.exists() and resolved in path.resolve().parents:
            raise ConfigError(f"{out_dir}: --out contains the input {path}, so its tables and case folders would "
                              f"land among the data; choose a folder that holds no input")
    ours = (any(out_dir.glob(f"*/{MARKER_FILE}"))
            or _csv_header(out_dir / cfg.VOLUMES_CSV) == volumes_columns(cfg.FLUIDS))
    foreign = [name for name in (cfg.CONFIG_JSON, cfg.VOLUMES_CSV) if (out_dir / name).exists()]
    if foreign and not ours:
        raise ConfigError(f"{out_dir}: --out holds a {' and a '.join(foreign)} that predict.py did not write (no "
                          f"<case>/{MARKER_FILE} beside it); choose an empty or new folder")


def _csv_header(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return None


def prepare_out_dir(out_dir: Path, cfg, runtime: Runtime) -> int:
    """Creates ``out_dir``, removes an interrupted run's temporaries and saves the config (rank 0; the other
    ranks wait for it). Returns 0, or 1 with one line when the folder cannot be written."""
    status = 0
    if runtime.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            removed = remove_stale_temporaries(out_dir)
            save_config(cfg, out_dir / cfg.CONFIG_JSON)
            if removed:
                print(f"note: removed {len(removed)} temporary file(s) an interrupted run left in {out_dir}")
        except OSError as error:
            print(f"error: {error_line(error)}; --out {out_dir} cannot be written", file=sys.stderr)
            status = 1
    if runtime.distributed:
        shared = [status]
        dist.broadcast_object_list(shared, src=0)
        status = shared[0]
    return status
