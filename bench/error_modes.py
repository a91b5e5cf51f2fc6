"""Where a configuration's fluid errors lie: the missed and false pixels of bench/quality.py's predictions, sorted
by error mode, with the pooled Dice each mode costs.

usage: python bench/error_modes.py OUT/real/RUN/seedS [more run folders ...] [--data OUT/data/duke_dev]
       [--columns 100,650] [--small-px 200]

Reads each fold's ``pred/<case>/segmentation.mhd`` below the given run folders (bench/quality.py's layout) and the
case's ``reference.mhd`` below ``--data`` (default: the run folder's OUT/data/duke_dev). Fluid is merged (label > 0),
as in bench/quality_measures.py. Connected components are found per B-scan (8-connected in y, x): the development
set's B-scans are about two original B-scans apart, so a pocket does not continue from one to the next.

Error modes, each pixel counted once:
- ``missed pocket`` (FN): a reference component that the prediction touches in fewer than 10% of its pixels, split
  into small (fewer than ``--small-px`` pixels) and large;
- ``boundary miss`` (FN): the rest of the missed pixels, beside pockets that were found;
- ``false pocket`` (FP): a predicted component that touches no reference fluid, split into those inside the
  annotated columns (``--columns``, start included, stop excluded) and those outside them (the development set's
  unannotated edges are labelled background);
- ``below`` / ``above`` / ``beside`` (FP): the rest of the false pixels, in components that touch reference fluid:
  deeper than the deepest reference fluid pixel of their column (a pocket drawn down into the layer beneath it),
  higher than its highest, or beside it (in a column without reference fluid, or between two pockets of one
  column).

For each mode the table gives its pixels, its share of all errors (FP + FN) and the pooled Dice if those pixels
alone were right: ``2 TP' / (2 TP' + FP' + FN')``. Printed as Markdown, one table over all cases of all folds given
(per run folder), then per case.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_tables import format_number, markdown_table  # noqa: E402
from quality_measures import MeasureError, dice, read_fluid_masks  # noqa: E402

MODES = ("missed pocket, small", "missed pocket, large", "boundary miss",
         "false pocket, annotated columns", "false pocket, edge columns", "below", "above", "beside")
FN_MODES, FP_MODES = MODES[:3], MODES[3:]
FOUND_FRACTION = 0.1  # a reference pocket touched in fewer than this share of its pixels counts as missed
CONNECTIVITY = np.ones((3, 3), dtype=bool)  # 8-connected within a B-scan


def bscan_errors(pred: np.ndarray, ref: np.ndarray, columns: tuple[int, int], small_px: int) -> Counter:
    """Error pixels of one B-scan by mode, and its ``tp``.

    Args:
        pred, ref: ``(y, x)`` bool fluid masks of one B-scan.
        columns: ``(start, stop)`` of the annotated columns.
        small_px: a missed pocket under this many pixels is small.

    Returns:
        Pixel counts: ``tp`` and one per mode of :data:`MODES` that occurs (a Counter: absent modes read 0).
    """
    counts = Counter(tp=int(np.count_nonzero(pred & ref)))
    ref_parts, _ = ndimage.label(ref, CONNECTIVITY)
    for index, part in enumerate(ndimage.find_objects(ref_parts), start=1):
        pocket = ref_parts[part] == index
        size, hit = int(pocket.sum()), int(np.count_nonzero(pocket & pred[part]))
        missed = size - hit
        if hit < FOUND_FRACTION * size:
            counts["missed pocket, small" if size < small_px else "missed pocket, large"] += missed
        else:
            counts["boundary miss"] += missed
    pred_parts, _ = ndimage.label(pred, CONNECTIVITY)
    rows = np.arange(ref.shape[0])[:, None]
    deepest = np.where(ref, rows, -1).max(axis=0)  # per column; -1 where the column holds no reference fluid
    highest = np.where(ref, rows, ref.shape[0]).min(axis=0)
    start, stop = columns
    for index, part in enumerate(ndimage.find_objects(pred_parts), start=1):
        component = pred_parts[part] == index
        false = component & ~ref[part]
        if not false.any():
            continue
        if not (component & ref[part]).any():
            x = np.nonzero(false)[1] + part[1].start
            inside = int(np.count_nonzero((x >= start) & (x < stop)))
            counts["false pocket, annotated columns"] += inside
            counts["false pocket, edge columns"] += x.size - inside
            continue
        y, x = np.nonzero(false)
        y, x = y + part[0].start, x + part[1].start
        below = (deepest[x] >= 0) & (y > deepest[x])
        above = (deepest[x] >= 0) & (y < highest[x])
        counts["below"] += int(below.sum())
        counts["above"] += int(above.sum())
        counts["beside"] += int((~below & ~above).sum())
    return counts


def case_errors(prediction: Path, reference: Path, columns: tuple[int, int], small_px: int) -> Counter:
    """:func:`bscan_errors` summed over a case's B-scans, with ``pred`` and ``ref`` fluid pixel counts.

    Raises:
        MeasureError: as :func:`quality_measures.read_fluid_masks`.
    """
    preds, refs, _ = read_fluid_masks(prediction, reference)
    total = Counter()
    for pred, ref in zip(preds, refs):
        total += bscan_errors(pred, ref, columns, small_px)
        total["pred"] += int(pred.sum())
        total["ref"] += int(ref.sum())
    return total


def mode_rows(counts: Counter) -> list[list[str]]:
    """Markdown rows: each mode's pixels, share of all errors and the pooled Dice without it; then the total."""
    tp, pred, ref = counts["tp"], counts["pred"], counts["ref"]
    errors = (pred - tp) + (ref - tp)
    rows = []
    for mode in MODES:
        pixels = counts[mode]
        # fixing a missed pixel makes it a TP (one FN less); fixing a false one removes it (one FP less)
        fixed = (dice(tp + pixels, pred + pixels, ref) if mode in FN_MODES else dice(tp, pred - pixels, ref))
        rows.append([mode, "FN" if mode in FN_MODES else "FP", str(pixels),
                     f"{pixels / errors:.1%}" if errors else "-", format_number(fixed, 3)])
    rows.append(["all (the pooled Dice as measured)", "", str(errors), "100%" if errors else "-",
                 format_number(dice(tp, pred, ref), 3)])
    return rows


def find_references(data: Path) -> dict[str, Path]:
    """Case name (the folder of its reference.mhd) -> reference.mhd, below ``data``."""
    return {path.parent.name: path for path in sorted(data.rglob("reference.mhd"))}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench/quality.py run folders: OUT/real/RUN/seedS")
    parser.add_argument("--data", type=Path, help="the built real set (default: OUT/data/duke_dev of the run)")
    parser.add_argument("--columns", default="100,650", help="annotated columns START,STOP (default: 100,650)")
    parser.add_argument("--small-px", type=int, default=200, help="a missed pocket under this many pixels is small")
    args = parser.parse_args(argv)
    try:
        start, stop = (int(value) for value in args.columns.split(","))
    except ValueError:
        parser.error(f"--columns {args.columns!r}: expected START,STOP, two integers")
    if not 0 <= start < stop:
        parser.error(f"--columns {args.columns!r}: expected 0 <= START < STOP")
    args.columns = (start, stop)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    failed = False
    for run in args.runs:
        data = args.data or run.resolve().parents[2] / "data" / "duke_dev"
        references = find_references(data)
        predictions = sorted(run.glob("*/pred/*/segmentation.mhd"))
        if not predictions:
            print(f"{run}: no fold's pred/<case>/segmentation.mhd here (expected a bench/quality.py run folder, "
                  f"OUT/real/RUN/seedS)", file=sys.stderr)
            failed = True
            continue
        per_case, total = {}, Counter()
        for prediction in predictions:
            case = prediction.parent.name
            if case not in references:
                print(f"{prediction}: no reference.mhd of case {case} below {data}", file=sys.stderr)
                failed = True
                continue
            try:
                per_case[case] = case_errors(prediction, references[case], args.columns, args.small_px)
            except MeasureError as error:
                print(error, file=sys.stderr)
                failed = True
                continue
            total += per_case[case]
        header = ["error mode", "kind", "pixels", "share of errors", "pooled Dice without it"]
        print(f"\n## {run}: {', '.join(sorted(per_case))}\n\n{markdown_table(header, mode_rows(total))}\n")
        case_header = ["case", "Dice", *MODES]
        rows = [[case, format_number(dice(c["tp"], c["pred"], c["ref"]), 3), *(str(c[mode]) for mode in MODES)]
                for case, c in sorted(per_case.items())]
        print(f"error pixels per case:\n\n{markdown_table(case_header, rows)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
