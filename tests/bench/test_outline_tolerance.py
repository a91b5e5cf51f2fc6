"""bench/outline_tolerance.py: hand-counted redrawings of a tiny reference, and the script on a built set's layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from bench.outline_tolerance import joined_pockets, main, moved_outline, redrawn_counts


def two_pockets() -> np.ndarray:
    """One B-scan (1, 9, 12): a 3 x 3 pocket (rows 3-5, x 2-4) and a 3 x 2 one two columns to its right (x 7-8)."""
    mask = np.zeros((1, 9, 12), bool)
    mask[0, 3:6, 2:5] = True
    mask[0, 3:6, 7:9] = True
    return mask


def test_outline_moves_by_the_cross():
    mask = two_pockets()
    # one pixel out: the 3 x 3 becomes a 5 x 5 less its 4 corners (21), the 3 x 2 a 5 x 4 less its corners (16); they
    # now touch (columns 5 and 6) without overlapping
    grown = moved_outline(mask, 1)
    assert grown[0, 3:6, 1:10].all() and grown.sum() == 21 + 16
    assert redrawn_counts(mask, grown) == (15, 37, 15)
    # one pixel in: the 3 x 3 keeps its centre, the 3 x 2 nothing
    assert moved_outline(mask, -1).sum() == 1
    assert moved_outline(mask, 0) is mask


def test_pockets_joined_fill_the_gap_between_them():
    mask = two_pockets()
    spacing = (0.01, 0.01, 0.1)  # (x, y, z) mm
    joined = joined_pockets(mask, spacing, radius_mm=0.015)  # 1.5 px: the 2-column gap closes
    assert joined[0, 3:6, 2:9].all() and joined.sum() == 21
    assert (joined_pockets(mask, spacing, radius_mm=0.005) == mask).all()  # half a pixel: nothing changes


def _write(path: Path, array: np.ndarray, spacing=(0.01, 0.01, 0.1)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_script_prints_the_pooled_dice_of_each_redrawing(tmp_path, capsys):
    data = tmp_path / "duke_dev"
    _write(data / "RETOUCH-TrainingSet-Spectralis" / "CASE1" / "reference.mhd", two_pockets())
    assert main(["--data", str(data), "--pixels", "1", "--closings-mm", "0.015"]) == 0
    out = capsys.readouterr().out
    assert f"| outline 1 px out | {2 * 15 / (37 + 15):.3f} | {37 / 15:.2f} |" in out
    assert f"| outline 1 px in | {2 * 1 / (1 + 15):.3f} |" in out
    assert f"| pockets joined, 0.015 mm | {2 * 15 / (21 + 15):.3f} |" in out
    assert "| CASE1 |" in out


def test_no_reference_or_a_bad_list_is_a_clear_error(tmp_path, capsys):
    assert main(["--data", str(tmp_path)]) == 2
    assert "no reference.mhd below it" in capsys.readouterr().err
    unreadable = tmp_path / "CASE1" / "reference.mhd"
    unreadable.parent.mkdir()
    unreadable.write_text("not a MetaImage header")
    assert main(["--data", str(tmp_path)]) == 1
    assert f"{unreadable}: cannot read the volume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(tmp_path), "--pixels", "1,x"])
    assert exit_info.value.code == 2 and "--pixels '1,x': expected comma-separated ints" in capsys.readouterr().err
