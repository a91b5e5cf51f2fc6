"""Finding cases under a data root and telling their vendor.

A RETOUCH case is a folder holding ``oct.mhd`` (+ ``oct.raw``) and, for training cases, ``reference.mhd``.
Any layout works: ``RETOUCH-TrainingSet-Cirrus/TRAIN001/oct.mhd``, the same below an extra parent folder, or a
plain ``Cirrus/TRAIN001/oct.mhd``; case folder names need not start with TRAIN. A device's own export (a file
with a suffix of ``utils.io.vendor_files.VENDOR_SUFFIXES``: ``.vol``, ``.img``, ``.fds``, ``.e2e``, ``.dcm``, ...)
anywhere below the data root is a case too, without reference, named by the file name without its suffix
(:func:`case_names`); other ``.xml`` files and macOS ``._`` copies are passed over.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from utils.io.mhd_io import VolumeError, read_volume_info
from utils.io.vendor_files import (KNOWN_VENDORS, VENDOR_SUFFIXES, found_in_folder, is_vendor_file,
                                   vendor_file_vendor)
from utils.io.vendors import vendor_from_array, vendor_from_path

OCT_FILE = "oct.mhd"
REFERENCE_FILE = "reference.mhd"
# The volume files (besides vendor files) a case may be named by on its own: what SimpleITK reads as one 3-D volume
VOLUME_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz")


@dataclasses.dataclass(frozen=True)
class Case:
    """One OCT volume of the data set.

    Attributes:
        name: unique case id: the folder name (a vendor file's name without suffix), or its path below the data
            root joined by ``_`` when two cases share a name.
        vendor: one of ``VENDORS``.
        oct_path: the case's ``oct.mhd``, or its vendor file.
        reference_path: its ``reference.mhd``, or None for a test-set case without labels.
    """

    name: str
    vendor: str
    oct_path: Path
    reference_path: Path | None

    @property
    def has_reference(self) -> bool:
        return self.reference_path is not None

    @property
    def from_vendor_file(self) -> bool:
        """True when the volume is a vendor file (``.vol``, ``.img``, ...) rather than a MetaImage header."""
        return is_vendor_file(self.oct_path)


def detect_vendor(oct_path: Path, vendors: Sequence[str], root: Path | None = None) -> str:
    """The vendor of a case: from its path if a folder names one, else from the volume's dtype and size.

    Args:
        oct_path: the case's ``oct.mhd``.
        vendors: the vendor names (``VENDORS``).
        root: the data root: only folders below it count (a study folder above it may name another vendor), and
            when none of them names one, the case's folder and the one above it; None (a file named on its own):
            those two, as in the RETOUCH layout ``RETOUCH-TrainingSet-<vendor>/<case>/oct.mhd``.

    Raises:
        VolumeError: neither the path nor the header tells the vendor, or they tell one ``vendors`` leaves out.
    """
    retouch_layout = Path(*oct_path.resolve().parent.parts[-2:])

    def named_by_path(names: Sequence[str]) -> str | None:
        vendor = vendor_from_path(oct_path.parent.relative_to(root) if root is not None else retouch_layout, names)
        if vendor is None and root is not None:  # the root is the case folder itself (predict.py CASE_FOLDER)
            vendor = vendor_from_path(retouch_layout, names)
        return vendor

    vendor = named_by_path(vendors)
    if vendor:
        return vendor
    vendor, by = named_by_path(KNOWN_VENDORS), "its folder"
    if vendor is None:
        info = read_volume_info(oct_path)
        vendor, by = vendor_from_array(info.dtype, info.shape), "its dtype and size"
        if vendor is None:
            raise VolumeError(f"{oct_path}: unknown vendor: no folder of the path names one of {tuple(vendors)} and "
                              f"a {info.dtype} volume of size {info.shape} matches none; put it under a folder "
                              f"named after its vendor")
    if vendor not in vendors:  # as a vendor file of a vendor VENDORS leaves out (vendor_file_vendor)
        raise VolumeError(f"{oct_path}: a {vendor} volume (by {by}), but VENDORS is {tuple(vendors)}")
    return vendor


def check_case(case: Case) -> None:
    """Checks a case's headers: OCT readable, reference (if any) readable and of the same size. A vendor file has
    no header of its own to check: its reader checks it when the volume is read.

    Raises:
        VolumeError: naming the file and the problem.
    """
    if case.from_vendor_file:
        return
    oct_shape = read_volume_info(case.oct_path).shape
    if case.reference_path is not None:
        ref_shape = read_volume_info(case.reference_path).shape
        if ref_shape != oct_shape:
            raise VolumeError(f"{case.reference_path}: size (z, y, x) {ref_shape} differs from its "
                              f"oct.mhd {oct_shape}")


def _walk_once(data_root: Path) -> tuple[list[Path], list[str]]:
    """Every ``oct.mhd`` and vendor file below ``data_root``, following symbolic links but entering each real
    folder once (a link back up the tree would loop; a link to a case elsewhere in the tree would count that case
    twice). Real folders are walked before linked ones, so a case reached both ways keeps its real path.

    Returns:
        ``(volume paths, one line per folder that cannot be read)``.
    """
    seen: set[tuple[int, int]] = set()
    volume_paths: list[Path] = []
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
            if entry.is_dir():
                (linked if entry.is_symlink() else real).append(folder / entry.name)
            elif entry.name == OCT_FILE or found_in_folder(folder / entry.name):
                volume_paths.append(folder / entry.name)
    return volume_paths, unreadable


def case_names(volume_paths: Sequence[Path], data_root: Path) -> dict[Path, str]:
    """Each case's name.

    An ``oct.mhd`` case is named by its folder, or, for folders that share a name, by the path below
    ``data_root`` joined by ``_``; vendor files never change these names. A vendor file is named by its file name
    without suffix; when that is taken (by an ``oct.mhd`` case or another vendor file), by the name and its suffix
    (``visit1_vol``), then by its path below ``data_root`` joined by ``_`` with the suffix. Names can still
    coincide (``a/b/X`` and ``a_b/X`` both give ``a_b_X``): :func:`find_cases` leaves such cases out and reports
    them.
    """
    oct_paths = [path for path in volume_paths if path.name == OCT_FILE]
    vendor_paths = [path for path in volume_paths if path.name != OCT_FILE]
    folder_counts = Counter(path.parent.name for path in oct_paths)

    def joined(parts: tuple[str, ...]) -> str:
        return "_".join(parts) or data_root.resolve().name

    names = {path: path.parent.name if folder_counts[path.parent.name] == 1
             else joined(path.parent.relative_to(data_root).parts) for path in oct_paths}
    taken = set(names.values())
    candidates = {path: [path.stem, f"{path.stem}_{path.suffix[1:].lower()}",
                         joined(path.parent.relative_to(data_root).parts + (path.stem, path.suffix[1:].lower()))]
                  for path in vendor_paths}
    for level in range(3):
        counts = Counter(candidates[path][level] for path in vendor_paths if path not in names)
        for path in vendor_paths:
            name = candidates[path][level]
            if path not in names and (level == 2 or (counts[name] == 1 and name not in taken)):
                names[path] = name
        taken = set(names.values())
    return names


def file_case(path: Path, vendors: Sequence[str], vendor: str | None = None) -> Case:
    """The case of one file named on its own (predict.py's inputs, ``Predictor.segment``, ``Preparer.prepare``),
    named as :func:`find_cases` names the files it finds: an ``oct.mhd`` by its folder, with the ``reference.mhd``
    beside it when there is one; another volume file (``VOLUME_SUFFIXES``) and a vendor file by its file name
    without suffix. Its vendor comes from the vendor file, or from the folders or the header
    (:func:`detect_vendor`); ``vendor`` replaces it.

    Raises:
        VolumeError, ValueError, OSError: neither a volume file nor a vendor file, or a vendor that cannot be told
            or that ``vendors`` leaves out; the message names the file.
    """
    if is_vendor_file(path):
        return Case(path.stem, vendor or vendor_file_vendor(path, vendors), path, None)
    if path.name == REFERENCE_FILE:
        raise ValueError(f"{path}: a case's reference labels, not a scan; give the {OCT_FILE} beside it")
    suffix = next((suffix for suffix in VOLUME_SUFFIXES if path.name.lower().endswith(suffix)), None)
    if suffix is None:
        raise ValueError(f"{path}: not a MetaImage header (.mhd) nor a vendor file ({' '.join(VENDOR_SUFFIXES)}) "
                         f"nor another volume file ({' '.join(VOLUME_SUFFIXES[1:])}); give oct.mhd files, vendor "
                         f"files or folders")
    if path.name == OCT_FILE:
        reference = path.parent / REFERENCE_FILE
        return Case(path.resolve().parent.name, vendor or detect_vendor(path, vendors), path,
                    reference if reference.is_file() else None)
    return Case(path.name[:-len(suffix)], vendor or detect_vendor(path, vendors), path, None)


def find_cases(data_root: str | Path, vendors: Sequence[str]) -> tuple[list[Case], list[str]]:
    """Every ``oct.mhd`` and vendor file below ``data_root`` at any depth, as cases sorted by path.

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
    volume_paths, errors = _walk_once(data_root)
    volume_paths = sorted(volume_paths)
    names = case_names(volume_paths, data_root)
    holders: dict[str, list[Path]] = {}
    for path, name in names.items():
        holders.setdefault(name, []).append(path)
    for path in volume_paths:
        others = [str(other) for other in holders[names[path]] if other != path]
        if not others:
            continue
        errors.append(f"{path}: its case name {names[path]} would also be that of {', '.join(others)}; rename "
                      f"one of them (a case name is the folder name of an oct.mhd or a vendor file's name without "
                      f"suffix, or the path below the data root joined by _)")
    cases = []
    for path in volume_paths:
        if len(holders[names[path]]) > 1:
            continue
        try:
            if path.name == OCT_FILE:
                reference = path.parent / REFERENCE_FILE
                cases.append(Case(names[path], detect_vendor(path, vendors, data_root), path,
                                  reference if reference.is_file() else None))
            else:
                cases.append(Case(names[path], vendor_file_vendor(path, vendors), path, None))
        except VolumeError as error:
            errors.append(str(error))
    return cases, errors
