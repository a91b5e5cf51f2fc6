"""utils/io/files.py atomic_path: the final file appears whole or not at all."""

import numpy as np
import pandas as pd
import pytest

from utils.io.files import atomic_path, atomic_write_csv, atomic_write_text, read_csv_table


def test_the_file_appears_when_the_block_ends(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp != target
        tmp.write_text("a,b\n")
        assert not target.exists()  # nothing under the final name while the block runs
    assert target.read_text() == "a,b\n"
    assert [path.name for path in target.parent.iterdir()] == ["table.csv"]


def test_a_block_that_raises_leaves_no_file_and_no_temporary_file(tmp_path):
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(target) as tmp:
            tmp.write_text("half a tab")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_block_that_raises_leaves_an_existing_file_untouched(tmp_path):
    target = tmp_path / "table.csv"
    atomic_write_text(target, "old\n")
    before = target.stat().st_mtime_ns
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("new, but incomplete")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n" and target.stat().st_mtime_ns == before
    assert [path.name for path in tmp_path.iterdir()] == ["table.csv"]


def test_formula_like_text_is_neutralised_and_read_back(tmp_path):
    names = ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "'quoted", "plain", "NA", "001"]
    frame = pd.DataFrame({"case": names, "n": range(len(names)), "x": [-1.5] * len(names)})
    atomic_write_csv(tmp_path / "t.csv", frame)
    cells = [line.split(",")[0] for line in (tmp_path / "t.csv").read_text().splitlines()[1:]]
    assert all(not cell.lstrip('"').startswith(("=", "+", "-", "@")) for cell in cells)
    assert "-1.5" in (tmp_path / "t.csv").read_text()  # numbers stay numbers
    back = read_csv_table(tmp_path / "t.csv", dtype={"case": str}, keep_default_na=False)
    assert back["case"].tolist() == names


def test_outputs_get_the_users_umask(tmp_path):
    import os
    import stat

    atomic_write_text(tmp_path / "a.txt", "x")
    mode = stat.S_IMODE((tmp_path / "a.txt").stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask  # mkstemp alone gives 0600


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    import os
    import time

    from utils.io.files import remove_stale_temporaries
    from utils.io.mhd_io import Geometry, write_volume

    gone = _dead_pid()
    (tmp_path / "run").mkdir()
    dead = [tmp_path / "run" / f".last.{gone}.abcd1234.tmp.pt", tmp_path / f".x_000.{gone}.zz_z9999.tmp.png"]
    for path in dead:
        path.write_bytes(b"half")
    (tmp_path / f".segmentation.{gone}.k2j3h4g5.tmp").mkdir()  # write_volume's folder
    (tmp_path / f".segmentation.{gone}.k2j3h4g5.tmp" / "segmentation.raw").write_bytes(b"x")
    live = tmp_path / f".best.{os.getpid()}.abcd1234.tmp.pt"
    live.write_bytes(b"being written")
    old = tmp_path / ".last.abcd1234.tmp.pt"  # an earlier version's name, without pid
    old.write_bytes(b"old")
    os.utime(old, (time.time() - 7200,) * 2)
    recent_old = tmp_path / ".best.efgh5678.tmp.pt"
    recent_old.write_bytes(b"maybe live")
    keep = [tmp_path / "last.pt", tmp_path / ".hidden.tmp", tmp_path / "notes.abcd1234.tmp.txt"]
    for path in keep:
        path.write_bytes(b"user")
    write_volume(tmp_path / "v.mhd", np.zeros((1, 2, 2), np.uint8), Geometry((1.0, 1.0, 1.0)))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted(dead + [tmp_path / f".segmentation.{gone}.k2j3h4g5.tmp", old])
    assert all(path.exists() for path in keep + [live, recent_old, tmp_path / "v.mhd", tmp_path / "v.raw"])
    assert not any(path.exists() for path in removed)


def _dead_pid():
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_writer_error_without_a_file_name_is_raised_naming_the_file(tmp_path):
    target = tmp_path / "table.csv"
    with pytest.raises(OSError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(28, "No space left on device")  # what a flush raises: no file name
    assert caught.value.errno == 28 and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
