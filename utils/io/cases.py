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


def find_cases(data_root: str | Path, vendors: Sequence[str]) -> tuple[list[Case], list[str]]:
    """Every ``oct.mhd`` below ``data_root`` at any depth, as cases sorted by path.

    Args:
        data_root: the folder to search (followed through symbolic links).
        vendors: the vendor names (``VENDORS``) that folder names are matched against.

    Returns:
        ``(cases, errors)``: the usable cases, and one line per case that cannot be used (its vendor is unknown),
        naming the file and the problem.

    Raises:
        FileNotFoundError: ``data_root`` is not a folder.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise FileNotFoundError(f"{data_root}: data root is not a folder")
    oct_paths = sorted(Path(folder) / OCT_FILE for folder, _, files in os.walk(data_root, followlinks=True)
                       if OCT_FILE in files)
    folder_counts = Counter(path.parent.name for path in oct_paths)
    cases, errors = [], []
    for oct_path in oct_paths:
        if folder_counts[oct_path.parent.name] == 1:
            name = oct_path.parent.name
        else:
            name = "_".join(oct_path.parent.relative_to(data_root).parts)
        reference = oct_path.parent / REFERENCE_FILE
        try:
            vendor = detect_vendor(oct_path, vendors, data_root)
        except VolumeError as error:
            errors.append(str(error))
            continue
        cases.append(Case(name, vendor, oct_path, reference if reference.is_file() else None))
    return cases, errors
