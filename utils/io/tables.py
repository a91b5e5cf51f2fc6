"""The CSV tables the stages hand to one another: the slice index (one row per B-scan) and the split (one row per
case), which prepare_data.py writes and train.py, evaluate.py and demo.py read here, so no later stage reaches
into the preparation code; and the names of ``volumes.csv``'s columns (one row per case), which predict.py writes
and evaluate.py reads. Every name column is read as text (case folders named ``NA`` or ``001`` stay names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd

from utils.io.files import read_csv_table

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["case", "vendor", "root", "split", "n_slices", "has_reference"]


def fluid_flag_columns(fluids: Mapping[str, int]) -> list[str]:
    """The slice index's fluid flag columns, ``is_<fluid>`` for each fluid of ``FLUIDS``."""
    return [f"is_{fluid}" for fluid in fluids]


def slice_index_columns(fluids: Mapping[str, int]) -> list[str]:
    """The columns of the slice index, in order."""
    return (["image_name", "vendor", "root", "slice"] + fluid_flag_columns(fluids)
            + ["case", "n_slices", "height", "width", "spacing_x_mm", "spacing_y_mm", "spacing_z_mm",
               "has_reference", "oct_path"])


def read_slice_index(path: str | Path, fluids: Mapping[str, int]) -> pd.DataFrame:
    """Reads a slice index CSV (fluid flags as nullable integers: blank for cases without reference).

    Raises:
        FileNotFoundError: no such file (prepare_data.py has not run).
        ValueError: a column is missing; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `python prepare_data.py` first (its preprocess and split "
                                f"steps)")
    flags = {column: "Int64" for column in fluid_flag_columns(fluids)}
    index = read_csv_table(path, dtype={**flags, "case": str, "image_name": str, "root": str, "vendor": str,
                                     "oct_path": str}, keep_default_na=False, na_values={c: [""] for c in flags})
    expected = slice_index_columns(fluids)
    missing = [column for column in expected if column not in index.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {expected}")
    return index


def read_split_table(path: str | Path) -> pd.DataFrame:
    """Reads a split CSV: at least ``case`` and ``split`` columns; split names stripped and lower-cased.

    Raises:
        ValueError: the file is not a CSV with ``case`` and ``split`` columns; the message names the file.
    """
    path = Path(path)
    try:
        split = read_csv_table(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the split file ({error})") from None
    missing = {"case", "split"} - set(split.columns)
    if missing:
        raise ValueError(f"{path}: split file lacks the column(s) {sorted(missing)}; expected at least "
                         f"case, split (and vendor, root)")
    split["split"] = split["split"].str.strip().str.lower()
    return split


def read_split_cases(path: str | Path, split: str) -> list[str]:
    """The case names of one split of a split CSV, sorted.

    Args:
        path: a split CSV (:func:`read_split_table`).
        split: the split's name, e.g. ``"test"`` (compared stripped and lower-cased, as the table's).

    Raises:
        ValueError: an unreadable file, missing columns, a blank case cell, a case listed twice (in one split or
            two), or no case of that split; the message names the file and the splits it has.
    """
    table = read_split_table(path)
    blank = table.index[table["case"].str.strip() == ""]
    if len(blank):
        raise ValueError(f"{path}: line(s) {', '.join(str(row + 2) for row in blank)} have a blank case cell; "
                         f"expected a case name in every row")
    repeated = sorted(set(table.loc[table["case"].duplicated(), "case"]))
    if repeated:
        raise ValueError(f"{path}: case(s) listed more than once: {', '.join(repeated)}; a case belongs to exactly "
                         f"one split (a case in train and test leaks): keep one row per case")
    names = sorted(set(table.loc[table["split"] == split.strip().lower(), "case"]))
    if not names:
        raise ValueError(f"{path}: no case of split {split!r}; it has {', '.join(sorted(table['split'].unique()))}")
    return names


# volumes.csv: the columns before the fluids' (the ETDRS columns that follow are utils/predict/etdrs.py's)
VOLUMES_CASE_COLUMNS = ["case", "vendor", "n_bscans"]


def volumes_case_cells(case: str, vendor: str, n_bscans: int) -> dict[str, str | int]:
    """A ``volumes.csv`` row's :data:`VOLUMES_CASE_COLUMNS`: the case's name, its vendor, its number of B-scans."""
    return dict(zip(VOLUMES_CASE_COLUMNS, (case, vendor, n_bscans)))


def volume_column(fluid: str) -> str:
    """``volumes.csv``'s column of a fluid's volume in mm³: ``<fluid>_volume_mm3``."""
    return f"{fluid}_volume_mm3"


def presence_column(fluid: str) -> str:
    """``volumes.csv``'s column of a fluid's presence score: ``<fluid>_presence``."""
    return f"{fluid}_presence"


def subfield_column(fluid: str, subfield: str) -> str:
    """``volumes.csv``'s column of a fluid's volume in mm³ in one ETDRS subfield: ``<fluid>_<subfield>_mm3``."""
    return f"{fluid}_{subfield}_mm3"


def volumes_fluid_columns(fluids: Iterable[str]) -> list[str]:
    """``volumes.csv``'s columns after :data:`VOLUMES_CASE_COLUMNS`: each fluid's :func:`volume_column`, then each
    fluid's :func:`presence_column`."""
    fluids = list(fluids)
    return [volume_column(fluid) for fluid in fluids] + [presence_column(fluid) for fluid in fluids]
