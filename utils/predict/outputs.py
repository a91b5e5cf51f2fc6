"""The files predict.py writes in a case's folder besides its marker: the segmentation, the probability volumes
and the overlay PNGs, with their names and the choices of the command line (:class:`Outputs`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from PIL import Image

from utils.io.files import atomic_path
from utils.io.mhd_io import VOLUME_FORMATS, remove_volume, with_format, write_volume
from utils.predict.overlays import overlay_bscan, overlay_indices

OVERLAY_FOLDER = "overlays"  # OUT/<case>/<this>/<case>_<zzz>.png


@dataclasses.dataclass(frozen=True)
class Outputs:
    """What predict.py writes per case besides the label volume and the marker.

    Attributes:
        format: volume file format, one of ``VOLUME_FORMATS``.
        overlays: overlay PNGs of this many evenly spread B-scans (0: all), or None for none.
        probabilities: also write each fluid's uint8-scaled probability volume.
        report: also draw the case's ``REPORT_PNG``.
    """

    format: str = VOLUME_FORMATS[0]
    overlays: int | None = None
    probabilities: bool = False
    report: bool = False


def segmentation_path(case_dir: Path, cfg, fmt: str) -> Path:
    """``case_dir/SEGMENTATION_FILE`` with the suffix of format ``fmt``."""
    return case_dir / with_format(cfg.SEGMENTATION_FILE, fmt)


def probability_paths(case_dir: Path, cfg, fmt: str) -> dict[str, Path]:
    """Fluid name -> ``case_dir/PROBABILITY_FILE`` (``{fluid}`` filled in) with the suffix of format ``fmt``."""
    return {fluid: case_dir / with_format(cfg.PROBABILITY_FILE.format(fluid=fluid), fmt) for fluid in cfg.FLUIDS}


def write_overlays(folder: Path, case_name: str, volume: np.ndarray, labels: np.ndarray, count: int, cfg) -> None:
    """PNGs of ``count`` evenly spread B-scans (0: all): the preprocessed B-scan in grey, fluids in colour."""
    for z in overlay_indices(volume.shape[0], count or None):
        rgb = overlay_bscan(volume[z], labels[z], cfg.FLUIDS)
        with atomic_path(folder / f"{case_name}_{z:03d}.png") as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG", compress_level=cfg.PNG_COMPRESS_LEVEL)


def write_volumes(case_dir: Path, cfg, outputs: Outputs, labels: np.ndarray,
                  probabilities: dict[str, np.ndarray] | None, geometry) -> None:
    """Writes the segmentation (and the probability volumes when given) in ``outputs.format``, and removes the
    same files in the other formats and probability volumes not written now, so a case folder never holds two
    segmentations or probabilities of an earlier run."""
    for fmt in VOLUME_FORMATS:
        if fmt != outputs.format:
            remove_volume(segmentation_path(case_dir, cfg, fmt))
        if fmt != outputs.format or probabilities is None:
            for path in probability_paths(case_dir, cfg, fmt).values():
                remove_volume(path)
    write_volume(segmentation_path(case_dir, cfg, outputs.format), labels, geometry)
    if probabilities is not None:
        for fluid, path in probability_paths(case_dir, cfg, outputs.format).items():
            write_volume(path, probabilities[fluid], geometry)
