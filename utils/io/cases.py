"""Finding RETOUCH cases under a data root and telling their vendor.

A case is a folder holding ``oct.mhd`` (+ ``oct.raw``) and, for training cases, ``reference.mhd`` (+ ``.raw``).
Any layout works: ``RETOUCH-TrainingSet-Cirrus/TRAIN001/oct.mhd``, the same below an extra parent folder, or a
plain ``Cirrus/TRAIN001/oct.mhd``; case folder names need not start with TRAIN.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from utils.io.mhd_io import VolumeError, read_volume_info

OCT_FILE = "oct.mhd"
REFERENCE_FILE = "reference.mhd"

# Default B-scan heights (pixels) of each vendor's uint8 volumes, used only when the path names no vendor.
_UINT8_HEIGHTS = {1024: "Cirrus", 885: "Topcon", 650: "Topcon"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One OCT volume of the data set.

    Attributes:
        name: unique case id: the folder name, or its path below the data root joined by ``_`` when two folders
            share a name.
        vendor: one of ``VENDORS``.
        oct_path: the case's ``oct.mhd``.
        reference_path: its ``reference.mhd``, or None for a test-set case without labels.
    """

    name: str
    vendor: str
    oct_path: Path
    reference_path: Path | None

    @property
    def has_reference(self) -> bool:
        return self.reference_path is not None


def vendor_from_path(path: str | Path, vendors: Sequence[str]) -> str | None:
    """The vendor of ``vendors`` named by the nearest folder of ``path`` (case-insensitive), or None."""
    for part in reversed(Path(path).parts):
        for vendor in vendors:
            if vendor.lower() in part.lower():
                return vendor
    return None


def vendor_from_array(dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
    """The vendor a volume's dtype and ``(z, y, x)`` size suggest, or None if they fit no vendor."""
    if np.dtype(dtype) == np.uint16:
        return "Spectralis"
    if np.dtype(dtype) == np.uint8 and len(shape) == 3:
        return _UINT8_HEIGHTS.get(int(shape[1]))
    return None


def detect_vendor(oct_path: Path, vendors: Sequence[str], root: Path | None = None) -> str:
    """The vendor of a case: from its path if a folder names one, else from the volume's dtype and size.

    Args:
        oct_path: the case's ``oct.mhd``.
        vendors: the vendor names (``VENDORS``).
        root: the data root: only folders below it count (a study folder above it may name another vendor);
            None (a file named on its own): the case's folder and the one above it, as in the RETOUCH layout
            ``RETOUCH-TrainingSet-<vendor>/<case>/oct.mhd``.

    Raises:
        VolumeError: neither the path nor the header tells the vendor.
    """
    folders = (oct_path.parent.relative_to(root) if root is not None
               else Path(*oct_path.resolve().parent.parts[-2:]))
    vendor = vendor_from_path(folders, vendors)
    if vendor:
        return vendor
    info = read_volume_info(oct_path)
    shape, dtype = info.shape, info.dtype
    vendor = vendor_from_array(dtype, shape)
    if vendor is None:
        raise VolumeError(f"{oct_path}: unknown vendor: no folder of the path names one of {tuple(vendors)} and "
                          f"a {dtype} volume of size {shape} matches none; put it under a folder named after "
                          f"its vendor")
    return vendor


def check_case(case: Case) -> None:
    """Checks a case's headers: OCT readable, reference (if any) readable and of the same size.

    Raises:
        VolumeError: naming the file and the problem.
    """
    oct_shape = read_volume_info(case.oct_path).shape
    if case.reference_path is not None:
        ref_shape = read_volume_info(case.reference_path).shape
        if ref_shape != oct_shape:
            raise VolumeError(f"{case.reference_path}: size (z, y, x) {ref_shape} differs from its "
                              f"oct.mhd {oct_shape}")


def _walk_once(data_root: Path) -> tuple[list[Path], list[str]]:
    """Every ``oct.mhd`` below ``data_root``, following symbolic links but entering each real folder once (a link
    back up the tree would loop; a link to a case elsewhere in the tree would count that case twice). Real
    folders are walked before linked ones, so a case reached both ways keeps its real path.

    Returns:
        ``(oct paths, one line per folder that cannot be read)``.
    """
    seen: set[tuple[int, int]] = set()
    oct_paths: list[Path] = []
    unreadable: list[str] = []
    real, linked = [data_root], []
    while real or linked:
        folder = real.pop() if real else linked.pop(0)
        try:
            status = folder.stat()
            if (status.st_dev, status.st_ino) in seen:
                continue
            seen.add((status.st_dev, status.st_ino))
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as error:
            unreadable.append(f"{folder}: cannot read this folder ({error.strerror}); the cases below it are left "
                              f"out: make it readable (chmod a+rx) or move it out of the data root")
            continue
        for entry in entries:
            if entry.name == OCT_FILE and not entry.is_dir():
                oct_paths.append(folder / OCT_FILE)
            elif entry.is_dir():
                (linked if entry.is_symlink() else real).append(folder / entry.name)
    return oct_paths, unreadable


def case_names(oct_paths: Sequence[Path], data_root: Path) -> dict[Path, str]:
    """Each case's name: its folder's name, or, for folders that share a name, the path below ``data_root``
    joined by ``_``. Joined paths can still coincide (``a/b/X`` and ``a_b/X`` both give ``a_b_X``) or equal
    another folder's name: :func:`find_cases` leaves such cases out and reports them."""
    folder_counts = Counter(path.parent.name for path in oct_paths)
    return {path: (path.parent.name if folder_counts[path.parent.name] == 1
                   else "_".join(path.parent.relative_to(data_root).parts) or data_root.resolve().name)
            for path in oct_paths}


def find_cases(data_root: str | Path, vendors: Sequence[str]) -> tuple[list[Case], list[str]]:
    """Every ``oct.mhd`` below ``data_root`` at any depth, as cases sorted by path.

    Args:
        data_root: the folder to search (followed through symbolic links, each real folder once).
        vendors: the vendor names (``VENDORS``) that folder names are matched against.

    Returns:
        ``(cases, errors)``: the usable cases, with unique names, and one line per problem, naming the file or
        folder: a case whose vendor is unknown, cases whose names would coincide (all of them are left out, so
        two volumes never share one output folder), a folder that cannot be read.

    Raises:
        FileNotFoundError: ``data_root`` is not a folder.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"{data_root}: data root is not a folder")
    oct_paths, errors = _walk_once(data_root)
    oct_paths = sorted(oct_paths)
    names = case_names(oct_paths, data_root)
    holders: dict[str, list[Path]] = {}
    for path, name in names.items():
        holders.setdefault(name, []).append(path)
    for path in oct_paths:
        others = [str(other) for other in holders[names[path]] if other != path]
        if not others:
            continue
        errors.append(f"{path}: its case name {names[path]} would also be that of {', '.join(others)}; rename "
                      f"one of the case folders (a case name is the folder name, or the path below the "
                      f"data root joined by _)")
    cases = []
    for oct_path in oct_paths:
        if len(holders[names[oct_path]]) > 1:
            continue
        reference = oct_path.parent / REFERENCE_FILE
        try:
            vendor = detect_vendor(oct_path, vendors, data_root)
        except VolumeError as error:
            errors.append(str(error))
            continue
        cases.append(Case(names[oct_path], vendor, oct_path, reference if reference.is_file() else None))
    return cases, errors
