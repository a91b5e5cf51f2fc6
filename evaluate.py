"""Scores predicted label volumes against the RETOUCH references: Dice, volume difference, detection AUC.

    python evaluate.py --pred PRED --data-root data [--split-file work/split.csv --split test] [--out DIR]

Each ``PRED/<case>/segmentation.mhd`` is matched by case name with the ``reference.mhd`` of that case under the
data root. Presence scores come from ``PRED/volumes.csv`` (columns ``case`` and ``<fluid>_presence``) when it
exists, else from the label volumes (1.0 where the prediction holds the fluid). Writes ``per_case.csv``,
``summary.csv`` and ``config.json`` to ``--out`` (default ``PRED/evaluation``) and prints the summary. How a fluid
absent from both volumes counts is described in ``utils/volume_metrics.py``.

Exit status 1 when a volume or volumes.csv could not be used (the other cases are still scored), 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

import config
from utils.evaluate import volume_metrics
from utils.io.cases import find_cases
from utils.configuration import ConfigError, add_config_arguments, load_config, save_config
from utils.io.files import atomic_write_csv
from utils.io.mhd_io import VolumeError
from utils.io.tables import read_split_table

PREDICTION_FILE = config.SEGMENTATION_FILE  # PRED/<case>/<this>
VOLUMES_CSV = config.VOLUMES_CSV  # PRED/<this>: per-case volumes and presence scores
DEFAULT_OUT_SUBDIR = "evaluation"  # PRED/<this>/ when --out is not given


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
    try:
        args.cfg = load_config(args.overrides)
    except ConfigError as error:
        parser.error(str(error))
    return args


def read_split(path: Path, split: str) -> set[str]:
    """The case names of ``split`` in a split CSV (columns ``case`` and ``split`` at least).

    Raises:
        ValueError: unreadable file, missing columns, or no case of that split; the message names the file.
    """
    table = read_split_table(path)
    names = set(table.loc[table["split"] == split, "case"])
    if not names:
        raise ValueError(f"{path}: no case of split {split!r}; it has {', '.join(sorted(table['split'].unique()))}")
    return names


def find_predictions(pred_dir: Path) -> dict[str, Path]:
    """Case name -> ``pred_dir/<case>/segmentation.mhd``, for every sub-folder that holds one."""
    return {path.parent.name: path for path in sorted(pred_dir.glob(f"*/{PREDICTION_FILE}"))}


def _names(names: list[str]) -> str:
    return ", ".join(sorted(names))


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = args.cfg
    fluids = cfg.FLUIDS
    data_root = args.data_root if args.data_root is not None else Path(cfg.DATA_ROOT)
    out_dir = args.out if args.out is not None else args.pred / DEFAULT_OUT_SUBDIR
    if not args.pred.is_dir():
        return _fail(f"error: {args.pred}: prediction folder is not a folder")
    try:
        cases, case_errors = find_cases(data_root, cfg.VENDORS)
        selected = read_split(args.split_file, args.split) if args.split_file is not None else None
    except (FileNotFoundError, ValueError) as error:
        return _fail(f"error: {error}")
    for line in case_errors:
        print(f"warning: {line}", file=sys.stderr)

    predictions = find_predictions(args.pred)
    if selected is not None:
        unknown = selected - {case.name for case in cases}
        if unknown:
            print(f"warning: {len(unknown)} case(s) of split {args.split!r} in {args.split_file} not found under "
                  f"{data_root}: {_names(list(unknown))}", file=sys.stderr)
        cases = [case for case in cases if case.name in selected]
        outside = [name for name in predictions if name not in selected]
        if outside:
            print(f"{len(outside)} prediction(s) of cases outside split {args.split!r} ignored", file=sys.stderr)
        predictions = {name: path for name, path in predictions.items() if name in selected}
    references = {case.name: case for case in cases if case.has_reference}
    no_prediction = [name for name in references if name not in predictions]
    no_reference = [name for name in predictions if name not in references]
    if no_prediction:
        print(f"warning: {len(no_prediction)} case(s) with a reference but no {args.pred}/<case>/{PREDICTION_FILE} "
              f"(not scored): {_names(no_prediction)}", file=sys.stderr)
    if no_reference:
        print(f"warning: {len(no_reference)} prediction(s) without a reference.mhd under {data_root} (not scored): "
              f"{_names(no_reference)}", file=sys.stderr)
    pairs = [(case, predictions[name]) for name, case in references.items() if name in predictions]
    if not pairs:
        return _fail(f"error: no case has both a prediction in {args.pred} and a reference under {data_root}")

    failed = []
    scores = None
    volumes_csv = args.pred / VOLUMES_CSV
    if volumes_csv.is_file():
        try:
            scores = volume_metrics.read_presence_scores(volumes_csv, list(fluids))
        except ValueError as error:
            print(f"error: {error}; presence scores taken from the label volumes instead", file=sys.stderr)
            failed.append(VOLUMES_CSV)
    print(f"presence scores from {volumes_csv if scores is not None else 'the predicted label volumes'}")

    spacing_rtol = cfg.SPACING_RTOL
    rows, no_score = [], []
    for case, prediction_path in tqdm(pairs, desc="evaluate", unit="case"):
        try:
            fluid_rows, label_presence = volume_metrics.evaluate_case_files(
                prediction_path, case.reference_path, fluids, cfg.BACKGROUND, spacing_rtol)
        except VolumeError as error:
            tqdm.write(f"error: {error}", file=sys.stderr)
            failed.append(case.name)
            continue
        presence = label_presence
        if scores is not None:
            if case.name in scores:
                presence = scores[case.name]
            else:
                no_score.append(case.name)
        for row in fluid_rows:
            rows.append({"case": case.name, "vendor": case.vendor, **row, "presence_score": presence[row["fluid"]]})
    if no_score:
        print(f"warning: {len(no_score)} case(s) not in {volumes_csv}, presence taken from their label volumes: "
              f"{_names(no_score)}", file=sys.stderr)

    per_case = pd.DataFrame(rows, columns=list(volume_metrics.PER_CASE_COLUMNS))
    summary = volume_metrics.summarize(per_case, cfg.VENDORS, list(fluids))
    atomic_write_csv(out_dir / "per_case.csv", per_case)
    atomic_write_csv(out_dir / "summary.csv", summary)
    save_config(cfg, out_dir / "config.json")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"{per_case['case'].nunique()} case(s) scored; per_case.csv, summary.csv, config.json in {out_dir}")
    if failed:
        return _fail(f"error: {len(failed)} input(s) could not be used: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
