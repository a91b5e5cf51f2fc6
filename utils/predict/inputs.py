"""The cases predict.py's command line names: ``oct.mhd`` files, vendor files, and folders searched for
``oct.mhd`` and vendor files at any depth (the RETOUCH layout, utils/io/cases.py)."""

from __future__ import annotations

from pathlib import Path

from utils.io.cases import OCT_FILE, Case, detect_vendor, find_cases
from utils.io.parallel import CASE_ERRORS
from utils.io.vendor_files import VENDOR_SUFFIXES, is_vendor_file, vendor_file_vendor


def file_case(path: Path, vendors) -> Case:
    """The case of one file, as the command line names it: a vendor file named by its stem, its vendor from the
    file; an ``.mhd`` named by its folder, its vendor from the folders or the header
    (:func:`utils.io.cases.detect_vendor`).

    Raises:
        VolumeError, ValueError, OSError: neither an ``.mhd`` nor a vendor file, or a vendor that cannot be told or
            that ``vendors`` leaves out; the message names the file.
    """
    if is_vendor_file(path):
        return Case(path.stem, vendor_file_vendor(path, vendors), path, None)
    if path.suffix.lower() != ".mhd":
        raise ValueError(f"{path}: not a MetaImage header (.mhd) nor a vendor file ({' '.join(VENDOR_SUFFIXES)}); "
                         f"give oct.mhd files, vendor files or folders")
    return Case(path.resolve().parent.name, detect_vendor(path, vendors), path, None)


def collect_cases(inputs: list[Path], vendors) -> tuple[list[Case], list[str]]:
    """The cases named by the command line: ``.mhd`` files, vendor files (named by their stem), and every
    ``oct.mhd`` below folders.

    Returns:
        ``(cases, errors)``: cases with distinct names (the same file named twice counts once), and one line per
        input that cannot be used (missing, not a MetaImage header or vendor file, unknown vendor, a case name
        already taken).
    """
    cases: list[Case] = []
    errors: list[str] = []
    for path in inputs:
        if path.is_dir():
            found, problems = find_cases(path, vendors)
            cases += found
            errors += problems
            if not found and not problems:
                errors.append(f"{path}: no {OCT_FILE} nor vendor file below this folder")
        elif path.is_file():
            try:
                cases.append(file_case(path, vendors))
            except CASE_ERRORS as error:
                errors.append(str(error))
        else:
            errors.append(f"{path}: no such file or folder")
    unique: dict[str, Case] = {}
    for case in cases:
        other = unique.get(case.name)
        if other is None:
            unique[case.name] = case
        elif other.oct_path.resolve() != case.oct_path.resolve():
            errors.append(f"{case.oct_path}: case name {case.name} is taken by {other.oct_path}; segment it in a "
                          f"separate run with another --out")
    return list(unique.values()), errors
