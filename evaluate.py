"""Scores predicted label volumes against the RETOUCH references: Dice, volume difference, detection AUC.

    python evaluate.py --pred PRED --data-root data [--split-file work/split.csv --split test] [--out DIR]

Each ``PRED/<case>/segmentation.mhd`` (``SEGMENTATION_FILE``; or the same name ending ``.mha`` or ``.nii.gz``, as
``predict.py --format`` writes it) is matched by case name with the ``reference.mhd``
of that case under the data root. Presence scores come from ``PRED/volumes.csv`` (``VOLUMES_CSV``; columns
``case`` and ``<fluid>_presence``) when it exists, else from the label volumes (1.0 where the prediction holds the
fluid). The model's settings (label codes, file names) come from ``PRED/config.json``, the settings predict.py ran
with (the checkpoint's), as predict.py takes them from the checkpoint; config.py and ``--set`` give only
``EVALUATION_LOCAL_SETTINGS`` (a ``--set`` of another setting is ignored with a note). Without a ``config.json``
(labels from another program) every setting is config.py's. Writes ``per_case.csv``, ``summary.csv`` and ``config.json`` to ``--out`` (default ``PRED/evaluation``)
and prints the summary. How a fluid absent from both volumes counts is described in
``utils/evaluate/volume_metrics.py``.

Exit status: 0 done; 1 when an input could not be used (each reported in one line naming the file; the other
cases are still scored) or no case can be scored; 2 on a usage or configuration error (bad option or ``--set``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from utils.configuration import ConfigError, add_config_arguments, load_config, save_config, set_names, trained_config
from utils.evaluate import volume_metrics
from utils.io.cases import Case, find_cases
from utils.io.files import atomic_write_csv, error_line, remove_stale_temporaries
from utils.io.outputs import check_outputs
from utils.io.mhd_io import VolumeError, find_volume
from utils.io.tables import read_split_cases

DEFAULT_OUT_SUBDIR = "evaluation"  # PRED/<this>/ when --out is not given
PER_CASE_CSV = "per_case.csv"  # OUT/<this>: one row per case and fluid (volume_metrics.PER_CASE_COLUMNS)
SUMMARY_CSV = "summary.csv"  # OUT/<this>: one row per vendor and fluid (volume_metrics.SUMMARY_COLUMNS)
# The settings of this command, not of the model: where the references are, which vendors' cases to score, the
# spacing tolerance, the name of the saved config. All others come from PRED/config.json when it exists.
EVALUATION_LOCAL_SETTINGS = ("DATA_ROOT", "VENDORS", "SPACING_RTOL", "CONFIG_JSON")


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


def evaluation_config(pred_dir: Path, local_cfg, names: list[str]) -> tuple[object, list[str], str]:
    """The effective config: ``pred_dir/CONFIG_JSON`` (predict.py's) with ``EVALUATION_LOCAL_SETTINGS`` from
    ``local_cfg`` on top (:func:`utils.configuration.trained_config`), or ``local_cfg`` alone when the folder holds
    no such file.

    Returns:
        ``(cfg, notes, where the model's settings came from)``.

    Raises:
        ValueError: a ``config.json`` that cannot be read or holds settings that cannot work; the message names it.
    """
    path = pred_dir / local_cfg.CONFIG_JSON
    if not path.is_file():
        return local_cfg, [], f"config.py (no {path}: labels not written by predict.py)"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable settings file ({error.__class__.__name__}: {error}); expected "
                         f"the config.json predict.py writes, or none") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: holds a JSON {type(saved).__name__}, expected the settings object predict.py "
                         f"writes")
    try:
        cfg, notes = trained_config(saved, local_cfg, EVALUATION_LOCAL_SETTINGS, names, source=str(path))
    except ConfigError as error:
        raise ValueError(f"{path}: {error}") from None
    return cfg, notes, str(path)


def find_predictions(pred_dir: Path, file_name: str) -> dict[str, Path]:
    """Case name -> ``pred_dir/<case>/<file_name>``, for every sub-folder that holds one, in any of the formats
    ``predict.py --format`` writes (:func:`utils.io.mhd_io.find_volume`: ``segmentation.nii.gz`` counts for
    ``segmentation.mhd``; the named one first when a folder holds several)."""
    found = {}
    for folder in sorted(path for path in pred_dir.iterdir() if path.is_dir()):
        path = find_volume(folder, file_name)
        if path is not None:
            found[folder.name] = path
    return found


def _names(names) -> str:
    return ", ".join(sorted(names))


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def select_pairs(args: argparse.Namespace, cfg, data_root: Path) -> tuple[list[tuple[Case, Path]], list[str]]:
    """The ``(case, prediction file)`` pairs to score: cases under ``data_root`` with a reference and a prediction
    in ``args.pred``, restricted to ``args.split`` of ``args.split_file`` when given. Unmatched cases are warned
    about on stderr; a case or folder under the data root that cannot be used is an error line (the others are
    still scored).

    Returns:
        ``(pairs, the lines of the cases and folders that could not be used)``.

    Raises:
        FileNotFoundError, ValueError: no data root, an unusable split file, or no pair; the message names the file.
    """
    cases, case_errors = find_cases(data_root, cfg.VENDORS)
    selected = set(read_split_cases(args.split_file, args.split)) if args.split_file is not None else None
    for line in case_errors:
        print(f"error: {line}", file=sys.stderr)
    predictions = find_predictions(args.pred, cfg.SEGMENTATION_FILE)
    if selected is not None:
        unknown = selected - {case.name for case in cases}
        if unknown:
            _warn(f"{len(unknown)} case(s) of split {args.split!r} in {args.split_file} not found under {data_root}: "
                  f"{_names(unknown)}")
        cases = [case for case in cases if case.name in selected]
        outside = [name for name in predictions if name not in selected]
        if outside:
            print(f"{len(outside)} prediction(s) of cases outside split {args.split!r} ignored", file=sys.stderr)
        predictions = {name: path for name, path in predictions.items() if name in selected}
    references = {case.name: case for case in cases if case.has_reference}
    no_prediction = [name for name in references if name not in predictions]
    no_reference = [name for name in predictions if name not in references]
    if no_prediction:
        _warn(f"{len(no_prediction)} case(s) with a reference but no {args.pred}/<case>/{cfg.SEGMENTATION_FILE} "
              f"(not scored): {_names(no_prediction)}")
    if no_reference:
        _warn(f"{len(no_reference)} prediction(s) without a reference.mhd under {data_root} (not scored): "
              f"{_names(no_reference)}")
    pairs = [(case, predictions[name]) for name, case in references.items() if name in predictions]
    if not pairs:
        raise ValueError(f"no case has both a prediction in {args.pred} and a reference under {data_root}")
    return pairs, case_errors


def read_presence(pred_dir: Path, cfg) -> tuple[dict[str, dict[str, float]] | None, list[str]]:
    """The presence scores of ``pred_dir/VOLUMES_CSV`` (case -> fluid -> score), None when there is no such file
    or it cannot be used; and the failed input (``[VOLUMES_CSV]`` or ``[]``), reported in one line on stderr."""
    volumes_csv = pred_dir / cfg.VOLUMES_CSV
    scores, failed = None, []
    if volumes_csv.is_file():
        try:
            scores = volume_metrics.read_presence_scores(volumes_csv, list(cfg.FLUIDS))
        except ValueError as error:
            print(f"error: {error}; presence scores taken from the label volumes instead", file=sys.stderr)
            failed.append(str(volumes_csv))
    print(f"presence scores from {volumes_csv if scores is not None else 'the predicted label volumes'}")
    return scores, failed


def score_cases(pairs: list[tuple[Case, Path]], scores: dict[str, dict[str, float]] | None, cfg
                ) -> tuple[pd.DataFrame, list[str]]:
    """Scores each pair against its reference.

    Args:
        pairs: from :func:`select_pairs`.
        scores: presence scores by case and fluid (:func:`read_presence`); a case they lack, or all cases when
            None, takes its presence from its predicted label volume.
        cfg: the config (``FLUIDS``, ``BACKGROUND``, ``SPACING_RTOL``).

    Returns:
        ``(per_case, failed)``: the rows of the cases scored (columns ``volume_metrics.PER_CASE_COLUMNS``), and the
        prediction files that could not be used, each reported in one line on stderr.
    """
    rows, failed, no_score = [], [], []
    for case, prediction_path in tqdm(pairs, desc="evaluate", unit="case"):
        try:
            fluid_rows, presence = volume_metrics.evaluate_case_files(
                prediction_path, case.reference_path, cfg.FLUIDS, cfg.BACKGROUND, cfg.SPACING_RTOL)
        except VolumeError as error:
            tqdm.write(f"error: {error}", file=sys.stderr)
            failed.append(str(prediction_path))
            continue
        if scores is not None:
            if case.name in scores:
                presence = scores[case.name]
            else:
                no_score.append(case.name)
        for row in fluid_rows:
            rows.append({"case": case.name, "vendor": case.vendor, **row, "presence_score": presence[row["fluid"]]})
    if no_score:
        _warn(f"{len(no_score)} case(s) not in {cfg.VOLUMES_CSV}, presence taken from their label volumes: "
              f"{_names(no_score)}")
    return pd.DataFrame(rows, columns=list(volume_metrics.PER_CASE_COLUMNS)), failed


def write_outputs(per_case: pd.DataFrame, out_dir: Path, cfg) -> pd.DataFrame:
    """Writes ``PER_CASE_CSV``, ``SUMMARY_CSV`` and ``CONFIG_JSON`` to ``out_dir``, prints the summary table, and
    returns it."""
    summary = volume_metrics.summarize(per_case, cfg.VENDORS, list(cfg.FLUIDS))
    atomic_write_csv(out_dir / PER_CASE_CSV, per_case)
    atomic_write_csv(out_dir / SUMMARY_CSV, summary)
    save_config(cfg, out_dir / cfg.CONFIG_JSON)
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"{per_case['case'].nunique()} case(s) scored; {PER_CASE_CSV}, {SUMMARY_CSV}, {cfg.CONFIG_JSON} in "
          f"{out_dir}")
    return summary


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
        if not args.pred.is_dir():
            raise FileNotFoundError(f"{args.pred}: prediction folder is not a folder")
        pairs, unusable = select_pairs(args, cfg, data_root)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    scores, failed = read_presence(args.pred, cfg)
    per_case, failed_cases = score_cases(pairs, scores, cfg)
    try:
        write_outputs(per_case, out_dir, cfg)
    except OSError as error:
        print(f"error: {error_line(error)}; each file in {out_dir} is complete or absent: rerun after fixing this",
              file=sys.stderr)
        return 1
    failed += failed_cases + [line.split(": ")[0] for line in unusable]
    if failed:
        print(f"error: {len(failed)} input(s) could not be used: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
