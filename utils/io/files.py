"""Atomic file writing: a file is written under a temporary name in its folder, then renamed into place.

An interrupted run therefore never leaves a truncated file under the final name that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it
# The temporary names: ".<stem>.<pid>.<random>.tmp<suffix>" (files) and ".<stem>.<pid>.<random>.tmp" (folders of
# write_volume); the pid lets a later run tell an interrupted writer's leftovers from a live writer's.
_TEMPORARY = re.compile(r"^\..*\.(\d+)\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
# Earlier versions wrote ".<stem>.<random>.tmp<suffix>" without the pid: removed once an hour old.
_OLD_TEMPORARY = re.compile(r"^\..*\.[A-Za-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")
_OLD_TEMPORARY_AGE_S = 3600


def temporary_prefix(path: Path) -> str:
    """The start of a temporary name beside ``path`` (mkstemp/mkdtemp ``prefix``)."""
    return f".{path.stem}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; renames it to ``path`` if the block ends without an exception.

    The temporary name keeps the suffix of ``path`` so that writers which choose a format by suffix still work.
    The file gets the permissions of any new file (0666 less the umask), not mkstemp's private 0600. An OSError
    raised without a file name (a full disk during a writer's flush) is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_prefix(path), suffix=f".tmp{path.suffix}", dir=path.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as error:
        if error.filename is not None or not error.strerror:
            raise
        # a writer's error without a file name (ENOSPC from a flush): name the file this block was writing
        raise OSError(error.errno, error.strerror, str(path)) from error
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.lstat().st_mtime > seconds
    except OSError:
        return False


def remove_stale_temporaries(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Removes what interrupted atomic writes left in ``folder``: temporary files and folders whose writing
    process is gone (a process of this machine still running keeps its own). Anything else is never touched.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    walk = os.walk(folder) if recursive else [(str(folder), [e.name for e in os.scandir(folder) if e.is_dir()],
                                               [e.name for e in os.scandir(folder) if not e.is_dir()])]
    for parent, folders, files in walk:
        for name in list(folders) + files:
            path = Path(parent) / name
            match = _TEMPORARY.match(name)
            if match:
                if _alive(int(match.group(1))):
                    continue
            elif not _OLD_TEMPORARY.match(name) or not _older_than(path, _OLD_TEMPORARY_AGE_S):
                continue
            try:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                    folders.remove(name)
                else:
                    path.unlink()
            except OSError:
                continue  # not ours to remove (another user's folder): leave it
            removed.append(path)
    return removed


@contextlib.contextmanager
def exclusive_lock(path: str | Path) -> Iterator[None]:
    """Holds an exclusive advisory lock on ``path`` (created if missing, left in place) for the block: two
    processes that write the same files from a shared folder's contents take turns. Without ``fcntl`` (Windows),
    or on a file system that has no locks (some network mounts), the block runs unlocked.

    Raises:
        OSError: ``path`` cannot be opened for appending.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            yield  # no locks here: unlocked, as before locking existed
            return
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    """Reads an 8-bit greyscale PNG written by :func:`atomic_write_png` as a ``(height, width)`` uint8 array.

    Raises:
        ValueError: a missing, truncated or foreign file; the message names it and how to make it again.
    """
    try:
        with Image.open(path) as image:
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as error:  # PIL: OSError for truncated data, SyntaxError for a bad chunk
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
        raise ValueError(f"{path}: cannot read this PNG ({reason}); delete its case folder under the slices folder "
                         f"and rerun prepare_data.py to write it again") from None
    if array.ndim != 2:
        raise ValueError(f"{path}: expected an 8-bit greyscale PNG, got shape {array.shape}; delete its case folder "
                         f"under the slices folder and rerun prepare_data.py")
    return array


def error_line(error: BaseException) -> str:
    """One line for an error a script reports: an OSError as ``<file>: <reason>`` (``[Errno 28] ...`` and the
    quoting of ``str(OSError)`` dropped), anything else its last line (a DataLoader worker's error carries the
    worker's traceback above it)."""
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else "output"
        return f"{where}: {error.strerror}" + (f" (to {error.filename2})" if error.filename2 else "")
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
