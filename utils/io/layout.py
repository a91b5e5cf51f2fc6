"""Where the stages' outputs live under WORK_DIR (names from config.py), so every stage finds them the same way.

``WORK_DIR/slices/<case>/oct/<case>_<zzz>.png`` (B-scan z, zero-padded to 3 digits), the same name under
``reference/`` (label codes) and ``roi/`` (ROI mask). In the slice index CSV, ``root`` is the case folder relative
to WORK_DIR (``slices/<case>``) and ``image_name`` the file name. A training run named ``<run>`` lives in
``WORK_DIR/runs/<run>/`` and its predictions, by default, in ``WORK_DIR/predictions/<run>/``.
"""

from __future__ import annotations

from pathlib import Path

CASE_DONE_JSON = "preprocess.json"  # in a case folder: written last by the preprocess step
CASE_SLICES_CSV = "slices.csv"  # in a case folder: that case's rows of the slice index
ROI_DONE_JSON = "roi.json"  # in a case folder: written last by the roi step


def case_root(case: str, cfg) -> str:
    """The ``root`` column of a case: its folder relative to WORK_DIR, with ``/`` separators."""
    return f"{cfg.SLICES_SUBDIR}/{case}"


def case_dir(work_dir: str | Path, case: str, cfg) -> Path:
    """The folder holding a case's prepared slices."""
    return Path(work_dir) / case_root(case, cfg)


def slice_file_name(case: str, z: int) -> str:
    """File name of B-scan ``z`` of ``case``: ``<case>_<zzz>.png``."""
    return f"{case}_{z:03d}.png"


def slice_paths(work_dir: str | Path, root: str, image_name: str, cfg) -> tuple[Path, Path, Path]:
    """``(image, mask, roi)`` paths of one slice-index row (``root``, ``image_name`` columns)."""
    folder = Path(work_dir) / root
    return (folder / cfg.SLICE_IMAGE_FOLDER / image_name, folder / cfg.SLICE_MASK_FOLDER / image_name,
            folder / cfg.SLICE_ROI_FOLDER / image_name)


def run_dir(work_dir: str | Path, run_name: str, cfg) -> Path:
    """The folder of the training run ``run_name``: ``WORK_DIR/<RUNS_SUBDIR>/<run_name>``."""
    return Path(work_dir) / cfg.RUNS_SUBDIR / run_name


def predictions_dir(work_dir: str | Path, run_name: str, cfg) -> Path:
    """The default folder of the predictions of run ``run_name``: ``WORK_DIR/<PREDICTIONS_SUBDIR>/<run_name>``."""
    return Path(work_dir) / cfg.PREDICTIONS_SUBDIR / run_name
