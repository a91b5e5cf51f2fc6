"""utils/io/files.py atomic_path: the final file appears whole or not at all."""

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
