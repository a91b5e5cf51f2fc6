"""The files predict.py writes in a case's folder besides its marker: the segmentation, the probability volumes
and the overlay PNGs, with their names and the choices of the command line (:class:`Outputs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from utils.io.files import atomic_path
from utils.io.mhd_io import VOLUME_FORMATS, Geometry, remove_volume, with_format, write_volume
from utils.predict.overlays import overlay_bscan, overlay_indices
from utils.predict.settings import PredictSettings

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


def segmentation_path(case_dir: Path, segmentation_file: str, fmt: str) -> Path:
    """``case_dir/<segmentation_file>`` (``SEGMENTATION_FILE``) with the suffix of format ``fmt`` (one of
    ``VOLUME_FORMATS``)."""
    return case_dir / with_format(segmentation_file, fmt)


def probability_paths(case_dir: Path, probability_file: str, fluids: Iterable[str], fmt: str) -> dict[str, Path]:
    """Fluid name -> ``case_dir/<probability_file>`` (``PROBABILITY_FILE``, ``{fluid}`` filled in) with the suffix
    of format ``fmt``, for each of ``fluids`` (names, in order)."""
    return {fluid: case_dir / with_format(probability_file.format(fluid=fluid), fmt) for fluid in fluids}


def write_overlays(folder: Path, case_name: str, volume: np.ndarray, labels: np.ndarray, count: int,
                   fluids: Mapping[str, int], compress_level: int) -> None:
    """PNGs of ``count`` evenly spread B-scans (0: all): the preprocessed B-scan in grey, fluids in colour.

    Args:
        folder: where the PNGs go, ``<case_name>_<zzz>.png``.
        case_name: the case's name.
        volume: ``(z, y, x)`` uint8 preprocessed volume.
        labels: ``(z, y, x)`` uint8 label codes, the same shape.
        count: B-scans drawn, >= 0 (0: all).
        fluids: fluid name -> label code, each drawn in its colour.
        compress_level: 0..9, the PNGs' zlib level (``PNG_COMPRESS_LEVEL``; lossless whatever the level).
    """
    for z in overlay_indices(volume.shape[0], count or None):
        rgb = overlay_bscan(volume[z], labels[z], fluids)
        with atomic_path(folder / f"{case_name}_{z:03d}.png") as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG", compress_level=compress_level)


def write_volumes(case_dir: Path, settings: PredictSettings, outputs: Outputs, labels: np.ndarray,
                  probabilities: dict[str, np.ndarray] | None, geometry: Geometry) -> None:
    """Writes the segmentation (and the probability volumes when given) in ``outputs.format``, and removes the
    same files in the other formats and probability volumes not written now, so a case folder never holds two
    segmentations or probabilities of an earlier run.

    Args:
        case_dir: ``OUT/<case>``.
        settings: the run's settings (``segmentation_file``, ``probability_file``, ``fluids``).
        outputs: the format, and whether probabilities are wanted.
        labels: ``(z, y, x)`` uint8 label codes.
        probabilities: fluid name -> ``(z, y, x)`` uint8 ``round(255 p)``, or None.
        geometry: the input's geometry, written with every volume.
    """
    for fmt in VOLUME_FORMATS:
        if fmt != outputs.format:
            remove_volume(segmentation_path(case_dir, settings.segmentation_file, fmt))
        if fmt != outputs.format or probabilities is None:
            for path in probability_paths(case_dir, settings.probability_file, settings.fluids, fmt).values():
                remove_volume(path)
    write_volume(segmentation_path(case_dir, settings.segmentation_file, outputs.format), labels, geometry)
    if probabilities is not None:
        for fluid, path in probability_paths(case_dir, settings.probability_file, settings.fluids,
                                             outputs.format).items():
            write_volume(path, probabilities[fluid], geometry)
