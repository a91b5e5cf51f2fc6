"""Scores predicted label volumes against the RETOUCH references: Dice, volume difference, detection AUC.

    python evaluate.py --pred PRED --data-root data [--split-file work/split.csv --split test] [--out DIR]

Each ``PRED/<case>/segmentation.mhd`` (``SEGMENTATION_FILE``; or the same name ending ``.mha`` or ``.nii.gz``, as
``predict.py --format`` writes it) is matched by case name with the ``reference.mhd``
of that case under the data root. Presence scores come from ``PRED/volumes.csv`` (``VOLUMES_CSV``; columns
``case`` and ``<fluid>_presence``) when it exists, else from the label volumes (1.0 where the prediction holds the
fluid). The model's settings (label codes, file names) come from ``PRED/config.json``, the settings predict.py ran
with (the checkpoint's), as predict.py takes them from the checkpoint; config.py and ``--set`` give only
``EVALUATION_LOCAL_SETTINGS`` (a ``--set`` of another setting is ignored with a note). Without a ``config.json``
(labels from another program) every setting is config.py's. Writes ``per_case.csv``, ``summary.csv`` and
``config.json`` to ``--out`` (default ``PRED/evaluation``) and prints the summary. How a fluid absent from both
volumes counts is described in ``utils/evaluate/volume_metrics.py``.

Exit status: 0 done; 1 when an input could not be used (each reported in one line naming the file; the other
cases are still scored) or no case can be scored; 2 on a usage or configuration error (bad option or ``--set``).

From Python, ``utils.evaluate.evaluator.evaluate_folder(pred, data_root)`` (or ``evaluate_arrays`` on label arrays)
gives the same tables as pandas DataFrames, writing nothing.
"""

from __future__ import annotations

import argparse
import math
import sys
import types
from pathlib import Path

from tqdm import tqdm

from utils.configuration import ConfigError, add_config_arguments, load_config, save_config, set_names
from utils.evaluate.evaluator import (EVALUATION_LOCAL_SETTINGS, Evaluation, EvaluationSettings, evaluation_config,
                                      score_folder)
from utils.io.files import atomic_write_csv, error_line, remove_stale_temporaries
from utils.io.outputs import check_outputs

DEFAULT_OUT_SUBDIR = "evaluation"  # PRED/<this>/ when --out is not given
PER_CASE_CSV = "per_case.csv"  # OUT/<this>: one row per case and fluid (volume_metrics.PER_CASE_COLUMNS)
SUMMARY_CSV = "summary.csv"  # OUT/<this>: one row per vendor and fluid (volume_metrics.SUMMARY_COLUMNS)
__all__ = ["EVALUATION_LOCAL_SETTINGS", "main"]  # the settings of this command: utils/evaluate/evaluator.py


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pred", required=True, type=Path, help="folder with <case>/segmentation.mhd")
    parser.add_argument("--data-root", type=Path, default=None,
                        help="folder holding the cases' reference.mhd (default: DATA_ROOT of config.py)")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="CSV with columns case and split: evaluate only the cases of --split")
    parser.add_argument("--split", default=None, help="split to evaluate (default: test, with --split-file)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: PRED/{DEFAULT_OUT_SUBDIR})")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.split is not None and args.split_file is None:
        parser.error("--split needs --split-file")
    if args.split_file is not None and args.split is None:
        args.split = "test"
    return args


def print_line(line: str, problem: bool) -> None:
    """The :data:`utils.evaluate.evaluator.Report` of the command line: problems on stderr, the rest on stdout
    (through tqdm, so a line never breaks the progress bar)."""
    tqdm.write(line, file=sys.stderr if problem else sys.stdout)


def write_outputs(result: Evaluation, cfg: types.SimpleNamespace, out_dir: Path) -> None:
    """Writes ``PER_CASE_CSV``, ``SUMMARY_CSV`` and ``CONFIG_JSON`` (``cfg``, the effective settings) to ``out_dir``
    and prints the summary table."""
    per_case, summary = result.per_case, result.summary
    atomic_write_csv(out_dir / PER_CASE_CSV, per_case)
    atomic_write_csv(out_dir / SUMMARY_CSV, summary)
    save_config(cfg, out_dir / cfg.CONFIG_JSON)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"every fluid merged, Dice pooled over the voxels of all cases: {result.pooled_fluid_dice:.3f}"
          if math.isfinite(result.pooled_fluid_dice) else "every fluid merged: no fluid in any case or prediction")
    print(f"{per_case['case'].nunique()} case(s) scored; {PER_CASE_CSV}, {SUMMARY_CSV}, {cfg.CONFIG_JSON} in "
          f"{out_dir}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        local_cfg = load_config(args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        cfg, notes, source = evaluation_config(args.pred, local_cfg, set_names(args))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"model settings (label codes, file names) from {source}")
    data_root = args.data_root if args.data_root is not None else Path(cfg.DATA_ROOT)
    out_dir = args.out if args.out is not None else args.pred / DEFAULT_OUT_SUBDIR
    try:
        check_outputs([("--out", out_dir)], [("data root", data_root)],
                      [("--pred folder", args.pred), ("--split-file", args.split_file)]
                      + [("prediction case folder", folder) for folder in args.pred.glob("*")
                         if (folder / cfg.SEGMENTATION_FILE).exists()])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    remove_stale_temporaries(out_dir, recursive=False)
    try:
        result = score_folder(args.pred, EvaluationSettings.from_config(cfg), data_root, args.split_file, args.split,
                              print_line, progress=True)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        write_outputs(result, cfg, out_dir)
    except OSError as error:
        print(f"error: {error_line(error)}; each file in {out_dir} is complete or absent: rerun after fixing this",
              file=sys.stderr)
        return 1
    if result.failed:
        print(f"error: {len(result.failed)} input(s) could not be used: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
