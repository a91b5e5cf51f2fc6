"""What an outline drawn another way costs: the pooled fluid Dice of the real set's reference masks against
themselves redrawn, so a model's Dice can be read against how far the grader's own outlines could move.

usage: python bench/outline_tolerance.py [--data OUT/data/duke_dev] [--pixels 1,2,3] [--closings-mm 0.05,0.1,0.2]

Reads every ``reference.mhd`` below ``--data`` (default: bench/quality.py's ``work/quality/data/duke_dev``), fluid
merged (label > 0) as in bench/quality_measures.py, and redraws each B-scan's fluid:
- ``outline k px out`` / ``in``: every outline moved k pixels outwards (dilation) or inwards (erosion) by the 3 x 3
  cross, k times: one pixel up, down, left and right per step, whatever the pixel's size in mm (a grader draws in
  screen pixels);
- ``pockets joined, r mm``: each B-scan's pockets closer than about 2r joined and their concavities filled
  (``utils.predict.postprocess.close_fluids``, the ellipse of ``r`` mm that predict.py's ``FLUID_CLOSING_MM`` uses):
  the envelope a grader draws around a cluster of cysts instead of each cyst.

For each redrawing it prints the pooled Dice over all B-scans of all cases (as bench/quality.py pools), the ratio of
the redrawn to the drawn area, and the Dice per case, as Markdown. No training, no prediction: seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from error_modes import find_references  # noqa: E402
from report_tables import format_number, markdown_table  # noqa: E402
from quality import DEFAULT_OUT  # noqa: E402
from quality_measures import MeasureError, dice, ratio, read_labels  # noqa: E402
from utils.predict.postprocess import close_fluids  # noqa: E402

CROSS = ndimage.generate_binary_structure(2, 1)  # the 3 x 3 cross: one pixel along each axis of a B-scan
FLUID = {"fluid": 1}  # the merged fluid's code in the masks redrawn


def moved_outline(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` with every outline moved ``pixels`` outwards (> 0) or inwards (< 0), B-scan by B-scan.

    Args:
        mask: ``(z, y, x)`` bool fluid.
        pixels: steps of the 3 x 3 cross; 0 returns ``mask``.

    Returns:
        ``(z, y, x)`` bool.
    """
    if pixels == 0:
        return mask
    operation = ndimage.binary_dilation if pixels > 0 else ndimage.binary_erosion
    return np.stack([operation(bscan, CROSS, iterations=abs(pixels)) for bscan in mask])


def joined_pockets(mask: np.ndarray, spacing_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """``mask`` with each B-scan's pockets closed by an ellipse of ``radius_mm`` (``close_fluids``).

    Args:
        mask: ``(z, y, x)`` bool fluid.
        spacing_mm: ``(x, y, z)`` in mm.
        radius_mm: >= 0.

    Returns:
        ``(z, y, x)`` bool.
    """
    return close_fluids(mask.astype(np.uint8), FLUID, spacing_mm, radius_mm) > 0


def redrawings(pixels: list[int], closings_mm: list[float]
               ) -> dict[str, Callable[[np.ndarray, tuple[float, float, float]], np.ndarray]]:
    """Name -> function ``(mask, spacing_mm) -> redrawn mask``, in the order printed."""
    redraw_by_name = {}
    for step in pixels:
        redraw_by_name[f"outline {step} px out"] = lambda mask, spacing, step=step: moved_outline(mask, step)
        redraw_by_name[f"outline {step} px in"] = lambda mask, spacing, step=step: moved_outline(mask, -step)
    for radius in closings_mm:
        redraw_by_name[f"pockets joined, {radius:g} mm"] = lambda mask, spacing, radius=radius: joined_pockets(
            mask, spacing, radius)
    return redraw_by_name


def redrawn_counts(mask: np.ndarray, redrawn: np.ndarray) -> tuple[int, int, int]:
    """``(tp, n_pred, n_ref)``: the pixels fluid in both, in the redrawn, in the drawn (quality_measures.dice's
    arguments)."""
    return int(np.count_nonzero(mask & redrawn)), int(redrawn.sum()), int(mask.sum())


def parse_number_list(text: str, kind: type, name: str, parser: argparse.ArgumentParser) -> list:
    """``"1,2"`` -> ``[1, 2]`` of positive ``kind``; ``""`` -> ``[]``; a parser error naming ``name`` otherwise."""
    try:
        values = [kind(item) for item in text.split(",") if item.strip()]
    except ValueError:
        parser.error(f"{name} {text!r}: expected comma-separated {kind.__name__}s")
    if any(value <= 0 for value in values):
        parser.error(f"{name} {text!r}: expected values > 0")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(DEFAULT_OUT) / "data" / "duke_dev",
                        help="the built real set (bench/quality.py's OUT/data/duke_dev; default: %(default)s)")
    parser.add_argument("--pixels", default="1,2,3", help="outline moves in pixels (default: %(default)s)")
    parser.add_argument("--closings-mm", default="0.05,0.1,0.2",
                        help="radii in mm of the pockets' joining (default: %(default)s)")
    args = parser.parse_args(argv)
    args.pixels = parse_number_list(args.pixels, int, "--pixels", parser)
    args.closings_mm = parse_number_list(args.closings_mm, float, "--closings-mm", parser)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    references = find_references(args.data)
    if not references:
        print(f"{args.data}: no reference.mhd below it (expected the built real set, bench/quality.py's "
              f"OUT/data/duke_dev)", file=sys.stderr)
        return 2
    cases, failed = {}, False
    for case, path in references.items():
        try:
            labels, spacing = read_labels(path)
        except MeasureError as error:
            print(error, file=sys.stderr)
            failed = True
            continue
        cases[case] = (labels > 0, spacing)
    if not cases:
        return 1
    header = ["reference redrawn", "pooled Dice", "area ratio redrawn/drawn", *cases]
    rows = []
    for name, redraw in redrawings(args.pixels, args.closings_mm).items():
        per_case = {case: redrawn_counts(mask, redraw(mask, spacing)) for case, (mask, spacing) in cases.items()}
        pooled = [sum(column) for column in zip(*per_case.values())]
        rows.append([name, format_number(dice(*pooled), 3), format_number(ratio(pooled[1], pooled[2]), 2),
                     *(format_number(dice(*counts), 3) for counts in per_case.values())])
    print(f"\n## The reference masks of {args.data} against themselves redrawn (fluid merged, every B-scan)\n\n"
          f"{markdown_table(header, rows)}\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
