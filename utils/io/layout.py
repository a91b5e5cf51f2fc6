"""Where the stages' outputs live under WORK_DIR (names from config.py), so every stage finds them the same way.

``WORK_DIR/slices/<case>/oct/<case>_<zzz>.png`` (B-scan z, zero-padded to 3 digits), the same name under
``reference/`` (label codes) and ``roi/`` (ROI mask). In the slice index CSV, ``root`` is the case folder relative
to WORK_DIR (``slices/<case>``) and ``image_name`` the file name. A training run named ``<run>`` lives in
``WORK_DIR/runs/<run>/`` and its predictions, by default, in ``WORK_DIR/predictions/<run>/``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import config
from utils.stage_settings import settings_from_config

CASE_DONE_JSON = "preprocess.json"  # in a case folder: written last by the preprocess step
CASE_SLICES_CSV = "slices.csv"  # in a case folder: that case's rows of the slice index
ROI_DONE_JSON = "roi.json"  # in a case folder: written last by the roi step


@dataclasses.dataclass(frozen=True)
class SliceLayout:
    """Where the prepared slices live under WORK_DIR: ``<slices_subdir>/<case>/<slice_image_folder>/`` and the same
    with ``slice_mask_folder`` and ``slice_roi_folder``. Built once per run (:meth:`from_config`); each field is the
    config.py setting of the same name in upper case, the defaults config.py's."""

    slices_subdir: str = config.SLICES_SUBDIR
    slice_image_folder: str = config.SLICE_IMAGE_FOLDER
    slice_mask_folder: str = config.SLICE_MASK_FOLDER
    slice_roi_folder: str = config.SLICE_ROI_FOLDER

    @classmethod
    def from_config(cls, cfg) -> SliceLayout:
        """The slice layout of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg)

    def case_root(self, case: str) -> str:
        """The ``root`` column of a case: its folder relative to WORK_DIR, with ``/`` separators."""
        return f"{self.slices_subdir}/{case}"

    def case_dir(self, work_dir: str | Path, case: str) -> Path:
        """The folder holding a case's prepared slices."""
        return Path(work_dir) / self.case_root(case)

    def slice_paths(self, work_dir: str | Path, root: str, image_name: str) -> tuple[Path, Path, Path]:
        """``(image, mask, roi)`` paths of one slice-index row (``root``, ``image_name`` columns)."""
        folder = Path(work_dir) / root
        return (folder / self.slice_image_folder / image_name, folder / self.slice_mask_folder / image_name,
                folder / self.slice_roi_folder / image_name)


def slice_file_name(case: str, z: int) -> str:
    """File name of B-scan ``z`` of ``case``: ``<case>_<zzz>.png``."""
    return f"{case}_{z:03d}.png"


def run_dir(work_dir: str | Path, run_name: str, runs_subdir: str) -> Path:
    """The folder of the training run ``run_name``: ``<work_dir>/<runs_subdir>/<run_name>`` (``WORK_DIR``,
    ``RUNS_SUBDIR``; ``run_name`` empty: the folder of all runs)."""
    return Path(work_dir) / runs_subdir / run_name


def predictions_dir(work_dir: str | Path, run_name: str, predictions_subdir: str) -> Path:
    """The default folder of the predictions of run ``run_name``: ``<work_dir>/<predictions_subdir>/<run_name>``
    (``WORK_DIR``, ``PREDICTIONS_SUBDIR``)."""
    return Path(work_dir) / predictions_subdir / run_name
