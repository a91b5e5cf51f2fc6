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

import numpy as np

import config
from utils.mhd_io import VolumeError, read_header

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
        vendor: one of ``config.VENDORS``.
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


def vendor_from_path(path: str | Path) -> str | None:
    """The vendor named by the nearest folder of ``path`` (case-insensitive), or None if no folder names one."""
    for part in reversed(Path(path).parts):
        for vendor in config.VENDORS:
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


_META_TYPES = {"MET_UCHAR": np.uint8, "MET_USHORT": np.uint16, "MET_CHAR": np.int8, "MET_SHORT": np.int16,
               "MET_UINT": np.uint32, "MET_INT": np.int32, "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64}


def header_shape_dtype(path: Path) -> tuple[tuple[int, ...], np.dtype | None]:
    """``((z, y, x), dtype)`` from a MetaImage header without reading the data (dtype None if unknown)."""
    header = read_header(path)
    try:
        shape = tuple(int(v) for v in header["DimSize"].split())[::-1]
    except ValueError:
        raise VolumeError(f"{path}: DimSize = {header['DimSize']!r} is not a list of integers") from None
    return shape, _META_TYPES.get(header["ElementType"])


def detect_vendor(oct_path: Path) -> str:
    """The vendor of a case: from its path if a folder names one, else from the volume's dtype and size.

    Raises:
        VolumeError: neither the path nor the header tells the vendor.
    """
    vendor = vendor_from_path(oct_path.parent)
    if vendor:
        return vendor
    shape, dtype = header_shape_dtype(oct_path)
    vendor = vendor_from_array(dtype, shape) if dtype is not None else None
    if vendor is None:
        raise VolumeError(f"{oct_path}: unknown vendor: no folder of the path names one of {config.VENDORS} and "
                          f"a {dtype} volume of size {shape} matches none; put it under a folder named after "
                          f"its vendor")
    return vendor


def check_case(case: Case) -> None:
    """Checks a case's headers: OCT readable, reference (if any) readable and of the same size.

    Raises:
        VolumeError: naming the file and the problem.
    """
    oct_shape, _ = header_shape_dtype(case.oct_path)
    if len(oct_shape) != 3:
        raise VolumeError(f"{case.oct_path}: expected a 3-D volume, got size {oct_shape}")
    if case.reference_path is not None:
        ref_shape, _ = header_shape_dtype(case.reference_path)
        if ref_shape != oct_shape:
            raise VolumeError(f"{case.reference_path}: size (z, y, x) {ref_shape} differs from its "
                              f"oct.mhd {oct_shape}")


def find_cases(data_root: str | Path) -> tuple[list[Case], list[str]]:
    """Every ``oct.mhd`` below ``data_root`` at any depth, as cases sorted by path.

    Args:
        data_root: the folder to search (followed through symbolic links).

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
            vendor = detect_vendor(oct_path)
        except VolumeError as error:
            errors.append(str(error))
            continue
        cases.append(Case(name, vendor, oct_path, reference if reference.is_file() else None))
    return cases, errors
