"""Train / validation / test split by case (never by B-scan), stratified by vendor, seeded.

The split CSV (``WORK_DIR/split.csv``, one row per case: ``case, vendor, root, split, n_slices, has_reference``)
is made once; a user may edit it in a spreadsheet, and an existing file (or one named with ``--split-file``) is
used as it is, never regenerated. From it, the per-split slice lists ``slices_<split>.csv`` that train.py reads
are written on every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

import config
from utils.io.files import atomic_write_csv, atomic_write_text
from utils.io.tables import SPLIT_COLUMNS, SPLITS, read_split_table
from utils.stage_settings import settings_from_config


@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """What the split step (:func:`write_split`) reads of the config, built once per run (:meth:`from_config`).
    Each field is the config.py setting of the same name in upper case; the defaults are config.py's, so a test
    names only what it changes.

    Attributes:
        split_csv: ``WORK_DIR/<this>``, the case split (one row per case).
        split_slices_csv: ``WORK_DIR/<this>`` with ``{split}`` filled in: the slice index rows of one split.
        split_fractions: split name (train, val, test) -> its share of the cases, each >= 0.
        split_seed: the automatic split's random seed.
        split_by_vendor: whether the automatic split is stratified by vendor.
        split_allow_unlisted: whether a given split file may leave prepared cases out (``--allow-unlisted``).
    """

    split_csv: str = config.SPLIT_CSV
    split_slices_csv: str = config.SPLIT_SLICES_CSV
    split_fractions: Mapping[str, float] = dataclasses.field(default_factory=lambda: dict(config.SPLIT_FRACTIONS))
    split_seed: int = config.SPLIT_SEED
    split_by_vendor: bool = config.SPLIT_BY_VENDOR
    split_allow_unlisted: bool = config.SPLIT_ALLOW_UNLISTED

    @classmethod
    def from_config(cls, cfg) -> SplitSettings:
        """The split settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg)


def case_table(slice_index: pd.DataFrame) -> pd.DataFrame:
    """One row per case of the slice index: ``case, vendor, root, n_slices, has_reference``."""
    return (slice_index.groupby("case", sort=True)
            .agg(vendor=("vendor", "first"), root=("root", "first"), n_slices=("slice", "size"),
                 has_reference=("has_reference", "first"))
            .reset_index())


def split_counts(n_cases: int, fractions: dict[str, float]) -> dict[str, int]:
    """How many of ``n_cases`` go to each split: val and test rounded from their fractions, train the rest.

    Train keeps at least one case whenever there is one; val and test get one only when the rounding gives it.
    """
    total = sum(fractions.values())
    n_val = int(round(n_cases * fractions.get("val", 0.0) / total))
    n_test = int(round(n_cases * fractions.get("test", 0.0) / total))
    while n_cases and n_val + n_test >= n_cases:  # leave train at least one case
        if n_test >= n_val and n_test:
            n_test -= 1
        else:
            n_val -= 1
    return {"train": n_cases - n_val - n_test, "val": n_val, "test": n_test}


def _strata(cases: pd.DataFrame, by_vendor: bool):
    """``(key, rows)`` groups a split is drawn within: one per vendor, or one of all cases (``by_vendor`` False)."""
    if by_vendor:
        return cases.groupby("vendor", sort=True)
    return [("all", cases)]


def make_split(cases: pd.DataFrame, fractions: dict[str, float], seed: int, by_vendor: bool = True,
               ) -> pd.DataFrame:
    """Assigns each case a split, stratified by vendor (``SPLIT_BY_VENDOR``; else drawn among all cases, as the
    original's ``SplitRandom(ratio=0.75)``), reproducibly for a given seed.

    Cases without a reference (test-set volumes) cannot be trained or validated on: they all go to ``test``.

    Args:
        cases: :func:`case_table` rows.
        fractions: e.g. ``{"train": 0.7, "val": 0.15, "test": 0.15}``.
        seed: seeds the shuffle within each vendor.
        by_vendor: stratify by vendor (else one draw over all labelled cases).

    Returns:
        ``cases`` with a ``split`` column, columns :data:`SPLIT_COLUMNS`, sorted by vendor and case.
    """
    unknown = set(fractions) - set(SPLITS)
    if unknown or any(value < 0 for value in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"SPLIT_FRACTIONS = {fractions}: expected non-negative fractions of {SPLITS}")
    rng = np.random.default_rng(seed)
    cases = cases.sort_values(["vendor", "case"]).reset_index(drop=True)
    split = pd.Series("test", index=cases.index)
    for _, group in _strata(cases[cases["has_reference"].astype(bool)], by_vendor):
        order = group.index.to_numpy()[rng.permutation(len(group))]
        counts = split_counts(len(group), fractions)
        split[order[:counts["train"]]] = "train"
        split[order[counts["train"]:counts["train"] + counts["val"]]] = "val"
    cases["split"] = split
    return cases[SPLIT_COLUMNS]



def extend_split(split: pd.DataFrame, new_cases: pd.DataFrame, fractions: dict[str, float],
                 seed: int, by_vendor: bool = True) -> pd.DataFrame:
    """An automatic split with cases prepared since it was made: the cases it holds keep their split (a model may
    have been trained on them), each new labelled case goes, vendor by vendor in a seeded order, to the split
    furthest below its share of that vendor (:func:`split_counts`); new cases without a reference go to test.

    Args:
        split: the split so far (columns :data:`SPLIT_COLUMNS`).
        new_cases: :func:`case_table` rows of cases it lacks.
        fractions, seed, by_vendor: ``SPLIT_FRACTIONS``, ``SPLIT_SEED``, ``SPLIT_BY_VENDOR`` (shares per vendor,
            or over all cases).

    Returns:
        Both, columns :data:`SPLIT_COLUMNS`, sorted by vendor and case.
    """
    rng = np.random.default_rng(seed)
    new_cases = new_cases.sort_values(["vendor", "case"]).reset_index(drop=True)
    new_cases["split"] = "test"
    labelled = new_cases["has_reference"].astype(bool)
    old_labelled = split[split["has_reference"].astype(str).str.lower().isin(["true", "1"])]
    for vendor, group in _strata(new_cases[labelled], by_vendor):
        members = (old_labelled.loc[old_labelled["vendor"] == vendor, "split"] if by_vendor
                   else old_labelled["split"]).tolist()
        target = split_counts(len(members) + len(group), fractions)
        for row in group.index.to_numpy()[rng.permutation(len(group))]:
            choice = max(SPLITS, key=lambda name: target[name] - members.count(name))
            new_cases.loc[row, "split"] = choice
            members.append(choice)
    both = pd.concat([split[SPLIT_COLUMNS], new_cases[SPLIT_COLUMNS]], ignore_index=True)
    return both.sort_values(["vendor", "case"]).reset_index(drop=True)


def _record_path(split_csv: Path) -> Path:
    """Beside an automatic split: what it was made from, so that a rerun can tell it from a user's split."""
    return split_csv.with_name(split_csv.stem + ".auto.json")


def _write_automatic_split(path: Path, split: pd.DataFrame, fractions: dict[str, float], seed: int,
                           by_vendor: bool) -> None:
    """Writes an automatic split and its record (:func:`_record_path`): its digest and the ``SPLIT_FRACTIONS``,
    ``SPLIT_SEED`` and ``SPLIT_BY_VENDOR`` it was made with."""
    atomic_write_csv(path, split)
    record = {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "SPLIT_FRACTIONS": fractions,
              "SPLIT_SEED": seed, "SPLIT_BY_VENDOR": by_vendor}
    atomic_write_text(_record_path(path), json.dumps(record, indent=2) + "\n")


def is_automatic_split(path: Path) -> bool:
    """Whether ``path`` is a split this module made and nobody has edited since (its record matches)."""
    try:
        record = json.loads(_record_path(path).read_text(encoding="utf-8"))
        return record.get("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
    except (OSError, ValueError, AttributeError):
        return False


def read_split_file(path: str | Path, known_cases: set[str]) -> tuple[pd.DataFrame, list[str]]:
    """Reads a split CSV (:func:`read_split_table`) and checks it against the prepared cases.

    Returns:
        ``(split, errors)``: the usable rows, and one line per problem: a blank case cell, a case listed twice or
        in two splits (left out of every split: a case in train and test would leak), an unknown case, an unknown
        or blank split name.

    Raises:
        ValueError: the file is not a CSV with ``case`` and ``split`` columns.
    """
    split = read_split_table(path)
    errors = []
    blank = split["case"].str.strip() == ""
    if blank.any():
        rows = ", ".join(str(row + 2) for row in split.index[blank])
        errors.append(f"{path}: line(s) {rows} have a blank case cell; expected a case name in every row")
    split = split[~blank]
    repeated = split["case"].duplicated(keep=False)
    if repeated.any():
        listing = "; ".join(f"{case} ({', '.join(group['split'].replace('', '(blank)'))})"
                            for case, group in split[repeated].groupby("case", sort=True))
        errors.append(f"{path}: case(s) listed more than once: {listing}; a case belongs to exactly one split "
                      f"(a case in train and test leaks): keep one row per case. These cases are left out")
    unknown = sorted(set(split["case"]) - known_cases)
    if unknown:
        errors.append(f"{path}: names case(s) that are not among the prepared cases: {', '.join(unknown)}")
    bad = split[~split["split"].isin(SPLITS)]
    if len(bad):
        errors.append(f"{path}: split must be one of {', '.join(SPLITS)}; rows of case(s) "
                      f"{', '.join(bad['case'].astype(str))} say "
                      f"{', '.join(sorted(set(bad['split'].astype(str).replace('', '(blank)'))))}")
    usable = split[split["case"].isin(known_cases) & split["split"].isin(SPLITS) & ~repeated]
    return usable, errors


def write_split(slice_index: pd.DataFrame, work_dir: str | Path, settings: SplitSettings,
                split_file: str | Path | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The method's split step (the original's ``create_test_train_set``): the case split and the per-split slice lists.

    An automatic split (made here, recorded in ``split.auto.json`` beside it, unedited since) takes in every case
    prepared since it was made (:func:`extend_split`), so a case that failed in a first run and was fixed later is
    not left out. A user's split (an edited ``split.csv``, or ``split_file``) is used as it is; a prepared case it
    does not list is an error unless ``settings.split_allow_unlisted`` (``prepare_data.py --allow-unlisted``).

    Args:
        slice_index: the slice index of the prepared cases.
        work_dir: where the ``split_csv`` and ``split_slices_csv`` files are written.
        settings: the split settings (:class:`SplitSettings`).
        split_file: a split CSV to use as it is; default ``work_dir/SPLIT_CSV``, made when it does not exist.

    Returns:
        ``(split, errors)``: one row per case with its split, and one line per problem in a given split file.
    """
    work_dir = Path(work_dir)
    fractions, seed, by_vendor = dict(settings.split_fractions), settings.split_seed, settings.split_by_vendor
    cases = case_table(slice_index)
    errors: list[str] = []
    path = Path(split_file) if split_file else work_dir / settings.split_csv
    if not split_file and path.is_file() and is_automatic_split(path):
        made = read_split_table(path)
        new = cases[~cases["case"].isin(made["case"])]
        if len(new):
            made = extend_split(made, new, fractions, seed, by_vendor)
            _write_automatic_split(path, made, fractions, seed, by_vendor)
            added = made[made["case"].isin(new["case"])]
            print(f"note: {len(new)} case(s) prepared since {path} was made added to it: " + ", ".join(
                f"{case} -> {name}" for case, name in zip(added["case"], added["split"])))
        split = cases.merge(made[["case", "split"]], on="case", how="inner")[SPLIT_COLUMNS]
    elif split_file or path.is_file():
        given, errors = read_split_file(path, set(cases["case"]))
        split = cases.merge(given[["case", "split"]], on="case", how="inner")[SPLIT_COLUMNS]
        unlabelled = split["split"].isin(["train", "val"]) & ~split["has_reference"].astype(bool)
        if unlabelled.any():
            errors.append(f"{path}: case(s) {', '.join(split.loc[unlabelled, 'case'])} have no reference.mhd "
                          f"and cannot be in train or val; they are left out")
            split = split[~unlabelled]
        listed = set(read_split_table(path)["case"])
        unlisted = sorted(set(cases["case"]) - listed)
        if unlisted:
            shown = f"{', '.join(unlisted[:10])}{', ...' if len(unlisted) > 10 else ''}"
            if settings.split_allow_unlisted:
                print(f"note: {path} does not list {len(unlisted)} prepared case(s) ({shown}); they are left out "
                      f"of every split (SPLIT_ALLOW_UNLISTED)")
            else:
                errors.append(f"{path}: does not list {len(unlisted)} prepared case(s): {shown}; add them to a "
                              f"split, or leave them out on purpose with --allow-unlisted (SPLIT_ALLOW_UNLISTED)"
                              + ("" if split_file else f", or delete {path.name} to make a new automatic split"))
    else:
        split = make_split(cases, fractions, seed, by_vendor)
        _write_automatic_split(path, split, fractions, seed, by_vendor)
    for name in SPLITS:
        members = set(split.loc[split["split"] == name, "case"])
        atomic_write_csv(work_dir / settings.split_slices_csv.format(split=name),
                         slice_index[slice_index["case"].isin(members)])
    return split, errors
