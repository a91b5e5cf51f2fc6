"""bench/error_modes.py: hand-counted error modes of a tiny B-scan, and the script on bench/quality.py's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bench.error_modes import MODES, bscan_errors, main, mode_rows

COLUMNS = (2, 18)  # annotated columns x in [2, 18)


def bscan_pair() -> tuple[np.ndarray, np.ndarray]:
    """A 12 x 20 B-scan (y, x) with each error mode once.

    Reference: a large pocket rows 2-4, x 4-8 (15 px); a small one at row 9, x 14-15 (2 px, missed).
    Prediction: the large pocket less its x=4 column (3 boundary misses) and drawn down two rows (rows 5-6,
    x 5-8: 8 px below), one pixel above it (row 1, x 6), one beside it (row 3, x 9); a false pocket inside the
    annotated columns (row 10, x 10-11: 2 px) and one at the edge (rows 0-1, x 19: 2 px).
    """
    ref = np.zeros((12, 20), bool)
    ref[2:5, 4:9] = True
    ref[9, 14:16] = True
    pred = np.zeros_like(ref)
    pred[2:7, 5:9] = True
    pred[1, 6] = True
    pred[3, 9] = True
    pred[10, 10:12] = True
    pred[0:2, 19] = True
    return pred, ref


def test_each_mode_counted_once_by_hand():
    pred, ref = bscan_pair()
    counts = bscan_errors(pred, ref, COLUMNS, small_px=5)
    assert counts["tp"] == 12
    assert {mode: counts[mode] for mode in MODES} == {
        "missed pocket, small": 2, "missed pocket, large": 0, "boundary miss": 3,
        "false pocket, annotated columns": 2, "false pocket, edge columns": 2,
        "below": 8, "above": 1, "beside": 1}
    # every error pixel is in exactly one mode
    assert sum(counts[mode] for mode in MODES) == np.count_nonzero(pred ^ ref)
    assert bscan_errors(pred, ref, COLUMNS, small_px=2)["missed pocket, large"] == 2


def test_mode_rows_give_the_dice_without_each_mode():
    pred, ref = bscan_pair()
    counts = bscan_errors(pred, ref, COLUMNS, small_px=5)
    counts.update(pred=int(pred.sum()), ref=int(ref.sum()))  # 26 predicted, 17 reference, 12 TP
    rows = {row[0]: row for row in mode_rows(counts)}
    assert rows["below"][2:] == ["8", f"{8 / 19:.1%}", f"{2 * 12 / (18 + 17):.3f}"]
    assert rows["missed pocket, small"][4] == f"{2 * 14 / (28 + 17):.3f}"
    assert rows["all (the pooled Dice as measured)"][2:] == ["19", "100%", f"{24 / 43:.3f}"]


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array.astype(np.uint8)), str(path))


def test_script_reads_quality_layout_and_names_a_missing_reference(tmp_path, capsys):
    pred, ref = bscan_pair()
    data = tmp_path / "data" / "duke_dev" / "RETOUCH-TrainingSet-Spectralis"
    _write(data / "CASE1" / "reference.mhd", ref[None])
    run = tmp_path / "real" / "cfg" / "seed0"
    _write(run / "fold1" / "pred" / "CASE1" / "segmentation.mhd", pred[None] * 1)
    assert main([str(run), "--columns", "2,18", "--small-px", "5"]) == 0
    out = capsys.readouterr().out
    assert "| below | FP | 8 |" in out and "| CASE1 | 0.558 |" in out
    _write(run / "fold2" / "pred" / "CASE2" / "segmentation.mhd", pred[None] * 1)
    assert main([str(run)]) == 1
    assert "no reference.mhd of case CASE2" in capsys.readouterr().err


def test_bad_columns_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path), "--columns", "650,100"])
    assert exit_info.value.code == 2 and "expected 0 <= START < STOP" in capsys.readouterr().err
