"""The cases predict.py's command line names: ``oct.mhd`` files, vendor files, and folders searched for
``oct.mhd`` and vendor files at any depth (the RETOUCH layout, utils/io/cases.py)."""

from __future__ import annotations

from pathlib import Path

from utils.io.cases import OCT_FILE, Case, file_case, find_cases
from utils.io.parallel import CASE_ERRORS


def collect_cases(inputs: list[Path], vendors) -> tuple[list[Case], list[str]]:
    """The cases named by the command line: volume files and vendor files (:func:`utils.io.cases.file_case`), and
    every ``oct.mhd`` and vendor file below folders (:func:`utils.io.cases.find_cases`).

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
