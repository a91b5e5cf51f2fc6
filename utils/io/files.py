"""Atomic file writing: a file is written under a temporary name in its folder, then renamed into place.

An interrupted run therefore never leaves a truncated file under the final name that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it to ``path`` if the block ends without an exception.

    The temporary name keeps the suffix of ``path`` so that writers which choose a format by suffix still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection); such text is written with
# a leading apostrophe (the usual neutralisation, OWASP), and so is text that starts with an apostrophe, so that
# read_csv_table can drop exactly one and give back the true text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def _is_text(column: pd.Series) -> bool:
    return column.dtype == object or pd.api.types.is_string_dtype(column.dtype)


def _escape(value):
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def _unescape(value):
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def atomic_write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    """Writes ``frame`` without its index to ``path`` atomically; text cells a spreadsheet would run as a formula
    (``=``, ``+``, ``-``, ``@`` first) get a leading apostrophe (:func:`read_csv_table` removes it)."""
    frame = frame.copy()
    for column in frame.columns:
        if _is_text(frame[column]):
            frame[column] = frame[column].map(_escape)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def read_csv_table(path: str | Path, **read_csv_arguments) -> pd.DataFrame:
    """``pd.read_csv(path, **read_csv_arguments)`` with the apostrophes :func:`atomic_write_csv` put before
    formula-like text removed again, so names come back as they were."""
    frame = pd.read_csv(path, **read_csv_arguments)
    for column in frame.columns:
        if _is_text(frame[column]):
            frame[column] = frame[column].map(_unescape)
    return frame


def atomic_write_png(path: str | Path, image: np.ndarray, compress_level: int = 1) -> None:
    """Writes a 2-D uint8 array as an 8-bit greyscale PNG, atomically.

    Args:
        path: destination ``.png``.
        image: ``(height, width)`` uint8.
        compress_level: zlib level 0-9 (the PNG stays lossless at any level).

    Raises:
        ValueError: ``image`` is not 2-D uint8.
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"{path}: expected a 2-D uint8 image, got shape {image.shape} dtype {image.dtype}")
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG", compress_level=compress_level)


def read_png(path: str | Path) -> np.ndarray:
    """Reads an 8-bit greyscale PNG written by :func:`atomic_write_png` as a ``(height, width)`` uint8 array."""
    with Image.open(path) as image:
        return np.asarray(image, dtype=np.uint8)
