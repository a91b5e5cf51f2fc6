"""The files of a whole predict.py run, written by rank 0 once every case is done: ``volumes.csv`` (gathered from
the case markers), the label tables for ITK-SNAP and 3D Slicer, and with ``--report`` the report index."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pandas as pd

from utils.io.files import atomic_write_csv, error_line, exclusive_lock
from utils.io.tables import VOLUMES_CASE_COLUMNS, volumes_fluid_columns
from utils.predict import etdrs, label_tables, report
from utils.predict.markers import MARKER_FILE, marker_matches, read_marker
from utils.predict.settings import PredictSettings


def volumes_columns(fluids) -> list[str]:
    """The columns of ``volumes.csv``, in order: case, vendor, n_bscans, then ``<fluid>_volume_mm3`` and
    ``<fluid>_presence`` for each fluid of ``FLUIDS`` (names from :mod:`utils.io.tables`), then the ETDRS grid's
    (:func:`utils.predict.etdrs.etdrs_columns`: where the fovea is and how it was found, the laterality, and
    ``<fluid>_<subfield>_mm3``)."""
    return VOLUMES_CASE_COLUMNS + volumes_fluid_columns(fluids) + etdrs.etdrs_columns(list(fluids))


def volumes_table(out_dir: Path, identity: dict, fluids) -> tuple[pd.DataFrame, list[str]]:
    """The ``volumes.csv`` rows of every case folder in ``out_dir`` whose marker matches ``identity``.

    Returns:
        ``(table sorted by case, names of case folders left out because another checkpoint or setting made them)``.
    """
    rows, others = [], []
    for marker_path in sorted(Path(out_dir).glob(f"*/{MARKER_FILE}")):
        marker = read_marker(marker_path.parent)
        if marker_matches(marker, identity) and isinstance(marker.get("result"), dict):
            rows.append(marker["result"])
        else:
            others.append(marker_path.parent.name)
    return pd.DataFrame(rows, columns=volumes_columns(fluids)), others


# in the output folder: two writers of its tables take turns. predict.py's run lock (utils/predict/out_dir.py) already
# keeps a second run out of the folder; this one guards write_run_tables called from the API alone.
TABLES_LOCK = ".tables.lock"


def write_run_tables(out_dir: Path, identity: dict, settings: PredictSettings, with_report: bool,
                     ) -> pd.DataFrame | None:
    """Writes ``volumes.csv`` (the cases of ``out_dir`` made with ``identity``), the label tables and, when
    ``with_report``, the report index; a line names the index, a note the case folders left out (stderr).
    ``settings`` gives the fluids, the background code and the files' names.

    The case markers are read and the tables written under a lock on ``out_dir/.tables.lock``: of two runs sharing
    the folder, the later one reads the markers only once the earlier one has written, so neither table misses a
    case that the other finished before it.

    Returns:
        The ``volumes.csv`` table, or None after one error line when ``volumes.csv`` cannot be written.
    """
    with contextlib.ExitStack() as locked:
        try:
            locked.enter_context(exclusive_lock(out_dir / TABLES_LOCK))
            table, others = volumes_table(out_dir, identity, settings.fluids)
            atomic_write_csv(out_dir / settings.volumes_csv, table)
        except OSError as error:
            print(f"error: {error_line(error)}; {settings.volumes_csv} not written (the case folders are complete: a "
                  f"rerun writes it without segmenting them again)", file=sys.stderr)
            return None
        label_tables.write_label_tables(out_dir, settings.fluids, settings.preprocess.background,
                                        settings.itksnap_labels_file, settings.slicer_colours_file)
        index = (report.write_report_index(out_dir, table, list(settings.fluids), settings.report_png,
                                           settings.report_html) if with_report else None)
    if index is not None:
        print(f"reports: {index}")
    if others:
        print(f"note: {len(others)} case folder(s) in {out_dir} made with another checkpoint or settings are not "
              f"in {settings.volumes_csv}: {', '.join(others)}", file=sys.stderr)
    return table
