"""Turns RETOUCH volumes into what train.py needs: preprocessed B-scans, the split, ROI masks.

    python prepare_data.py [--data-root DIR] [--work-dir DIR] [--split-file CSV] [--allow-unlisted] [--workers N]
                           [--set NAME=VALUE ...] [preprocess|split|roi ...]

With no step named, all three run in order. Cases: every ``oct.mhd`` (with ``reference.mhd`` beside it: a
training case) and every vendor file (``.vol``, Heyex ``.xml``, ``.img``, ``.fds``/``.fda``, ``.e2e``, ``.dcm``: a
case without reference, named by its file name) at any depth below the data root (utils/io/cases.py). Reads only
from the data root; writes under the work dir:
    slices/<case>/{oct,reference,roi}/<case>_<zzz>.png   preprocessed B-scans, label codes, ROI masks
    slice_index.csv      one row per B-scan: image_name, vendor, root, slice, is_IRF, is_SRF, is_PED, ...
    split.csv            one row per case: case, vendor, root, split (train / val / test), ...
    slices_<split>.csv   the slice index rows of each split
    histogram_reference.json, prepare_config.json
A rerun skips cases whose outputs are complete. Problems with a case are reported in one line naming the file;
the other cases go on, and the run ends with a summary and exit status 1. A usage or configuration error (bad
option or ``--set``, a setting that cannot work, a work dir inside the data root) is one line and exit status 2.
A run holds the work dir for its whole duration (a lock on ``WORK_DIR/.prepare_data.lock``, released by the system
however the run ends): a second run on the same work dir is refused at once, in one line naming the run that holds
it, with exit status 2.

From Python, ``utils.prepare.preparer.Preparer(histogram_reference).prepare(path_or_array)`` prepares one volume with
the same settings and functions (preprocessed volume, label codes, ROI masks, slice-index rows), writing nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from pathlib import Path

from utils.io.cases import Case, find_cases
from utils.configuration import ConfigError, add_config_arguments, load_config, save_config
from utils.io.files import atomic_write_text, error_line, remove_stale_temporaries
from utils.io.outputs import check_outputs
from utils.io.parallel import default_workers
from utils.io.run_lock import run_lock
from utils.io.tables import read_slice_index
from utils.io.vendor_files import VENDOR_SUFFIXES
from utils.prepare.preprocessing import PreprocessSettings, load_histogram_reference, write_preprocessed_slices
from utils.prepare.roi import RoiSettings, write_roi_masks
from utils.prepare.splits import SplitSettings, write_split

STEPS = ("preprocess", "split", "roi")
CONFIG_JSON = "prepare_config.json"
RUN_LOCK = ".prepare_data.lock"  # in the work dir: held by the run writing it (utils/io/run_lock.py)

__all__ = ["write_preprocessed_slices", "write_split", "write_roi_masks", "main"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps", nargs="*", metavar="STEP",
                        help=f"steps to run, from {', '.join(STEPS)} (default: all, in order)")
    parser.add_argument("--data-root", help="folder with the RETOUCH volumes (default: config DATA_ROOT)")
    parser.add_argument("--work-dir", help="output folder (default: config WORK_DIR)")
    parser.add_argument("--split-file", help="use this split CSV as it is (default: WORK_DIR/split.csv, made "
                                             "when missing)")
    parser.add_argument("--allow-unlisted", action="store_true",
                        help="a user's split that does not list every prepared case leaves those cases out of every "
                             "split instead of failing (SPLIT_ALLOW_UNLISTED)")
    parser.add_argument("--workers", type=int, default=default_workers(),
                        help="processes (default: all cores)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    unknown = [step for step in args.steps if step not in STEPS]
    if unknown:
        parser.error(f"unknown step {unknown[0]!r}; the steps are {', '.join(STEPS)}")
    return args


def output_paths(work_dir: Path, cfg) -> list[tuple[str, Path]]:
    """Everything prepare_data.py writes, by the setting that names it (checked against the inputs first)."""
    split_csv = work_dir / cfg.SPLIT_CSV
    return ([("--work-dir", work_dir), ("SLICES_SUBDIR", work_dir / cfg.SLICES_SUBDIR),
             ("SLICE_INDEX_CSV", work_dir / cfg.SLICE_INDEX_CSV), ("SPLIT_CSV", split_csv),
             ("SPLIT_CSV", split_csv.with_name(split_csv.stem + ".auto.json")),
             ("HISTOGRAM_REFERENCE_JSON", work_dir / cfg.HISTOGRAM_REFERENCE_JSON),
             ("prepare_config.json", work_dir / CONFIG_JSON)]
            + [("SPLIT_SLICES_CSV", work_dir / cfg.SPLIT_SLICES_CSV.format(split=name))
               for name in ("train", "val", "test")])


def run(args: argparse.Namespace) -> list[str]:
    """Runs the requested steps, holding the work dir's run lock throughout; returns one line per problem with an
    input (empty when all went well).

    Raises:
        ConfigError: a bad ``--set``, a setting that cannot work, or a work dir inside the data root.
        FolderInUse: another prepare_data.py run holds the work dir (nothing was written).
    """
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"DATA_ROOT={args.data_root}")
    if args.work_dir:
        overrides.append(f"WORK_DIR={args.work_dir}")
    if args.allow_unlisted:
        overrides.append("SPLIT_ALLOW_UNLISTED=True")
    cfg = load_config(overrides)
    data_root, work_dir = Path(cfg.DATA_ROOT), Path(cfg.WORK_DIR)
    steps = [step for step in STEPS if step in args.steps] or list(STEPS)
    check_outputs(output_paths(work_dir, cfg), [("data root", data_root)],
                  [("--split-file", args.split_file), ("HISTOGRAM_REFERENCE", cfg.HISTOGRAM_REFERENCE or None)])
    cases, errors = [], []
    if "preprocess" in steps:  # the cases are found before the work dir is made: a wrong data root leaves nothing
        if not data_root.is_dir():
            return [f"{data_root}: data root is not a folder; pass --data-root or set DATA_ROOT in config.py"]
        cases, errors = find_cases(data_root, cfg.VENDORS)
        if not cases and not errors:
            return [f"{data_root}: no oct.mhd nor vendor file ({' '.join(VENDOR_SUFFIXES)}) found at any depth; "
                    f"point --data-root at the RETOUCH download (or make synthetic data: python -m utils.synthetic "
                    f"--out DIR)"]
        work_dir.mkdir(parents=True, exist_ok=True)
    # Without preprocess a missing work dir has no slice index to read: the steps fail at once, writing nothing, so
    # there is nothing to lock (and the folder is not made).
    with run_lock(work_dir / RUN_LOCK, "prepare_data.py", "--work-dir") if work_dir.is_dir() else nullcontext():
        return errors + run_steps(steps, cases, data_root, work_dir, cfg, args)


def run_steps(steps: list[str], cases: list[Case], data_root: Path, work_dir: Path, cfg,
              args: argparse.Namespace) -> list[str]:
    """The requested steps on ``cases`` (found under ``data_root``; empty without preprocess), in the work dir this
    run holds; returns one line per problem with an input."""
    errors: list[str] = []
    removed = remove_stale_temporaries(work_dir)
    if removed:
        print(f"note: removed {len(removed)} temporary file(s) an interrupted run left in {work_dir}")

    if "preprocess" in steps:
        print(f"{len(cases)} case(s) under {data_root}: " + ", ".join(
            f"{sum(case.vendor == vendor for case in cases)} {vendor}" for vendor in cfg.VENDORS))
        settings = PreprocessSettings.from_config(cfg)
        try:
            reference_path, reference, notes = load_histogram_reference(cases, cfg.HISTOGRAM_REFERENCE, settings,
                                                                        data_root)
        except (OSError, ValueError) as error:
            return [error_line(error)]
        for note in notes:
            print(f"note: {note}")
        cfg.HISTOGRAM_REFERENCE = str(reference_path or "")
        if reference:
            atomic_write_text(work_dir / cfg.HISTOGRAM_REFERENCE_JSON, json.dumps(reference) + "\n")
        index, errors = write_preprocessed_slices(cases, work_dir, settings, cfg.SLICE_INDEX_CSV, reference,
                                                  args.workers)
    else:
        try:
            index = read_slice_index(work_dir / cfg.SLICE_INDEX_CSV, cfg.FLUIDS)
        except (OSError, ValueError) as error:
            return [str(error)]

    if "split" in steps:
        try:
            split, split_errors = write_split(index, work_dir, SplitSettings.from_config(cfg), args.split_file)
        except ValueError as error:
            split, split_errors = None, [str(error)]
        errors += split_errors
        if split is not None:
            print("split (cases): " + ", ".join(
                f"{name} {count}" for name, count in split["split"].value_counts().sort_index().items()))
    if "roi" in steps:
        errors += write_roi_masks(index, work_dir, RoiSettings.from_config(cfg), args.workers)
    save_config(cfg, work_dir / CONFIG_JSON)
    print(f"{len(index)} B-scans of {index['case'].nunique()} case(s) prepared in {work_dir}")
    return errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        errors = run(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the work dir cannot be written (read-only, disk full): nothing more can be done
        print(f"error: {error_line(error)}; the outputs written so far are complete files, and a rerun after "
              f"fixing this continues from them", file=sys.stderr)
        return 1
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        print(f"prepare_data: {len(errors)} problem(s); see the lines above", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
