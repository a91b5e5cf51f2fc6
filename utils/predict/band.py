"""Which part of each B-scan the network segments (``PREDICT_REGION``: :data:`PREDICT_REGIONS`).

``"band"`` (the original, ``test_model.py``): only the ``PATCH_SHAPE[0]`` (depth-scaled) rows centred on the middle
of the B-scan's ROI (:func:`bscan_roi`, :func:`band_top`) go through the network; the band's probabilities are placed
in a background canvas (:func:`place_bands`). ``"roi"``: the whole B-scan goes through, and pixels outside its ROI
become background (:func:`keep_inside`). ``"all"``: the whole B-scan, nothing masked.
:func:`utils.predict.inference.iter_probabilities` applies the :class:`Region` a name stands for.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from utils.predict.settings import InferenceSettings
from utils.prepare.roi import roi_mask, volume_roi_masks


@dataclasses.dataclass(frozen=True)
class Region:
    """What one ``PREDICT_REGION`` does around the network, per B-scan.

    Attributes:
        band: only the band of ``PATCH_SHAPE[0]`` depth-scaled rows centred on the ROI (:func:`band_top`) goes
            through the network, its probabilities placed in a background canvas (:func:`place_bands`); else the
            whole B-scan.
        inside_roi: pixels outside the B-scan's ROI become background (:func:`keep_inside`).
    """

    band: bool
    inside_roi: bool

    @property
    def needs_roi(self) -> bool:
        """Whether the B-scans' ROIs are read (:func:`volume_rois`)."""
        return self.band or self.inside_roi


# PREDICT_REGION's names (checked by load_config; bench/bench_predict.py offers them) and what each does
PREDICT_REGIONS = {
    "band": Region(band=True, inside_roi=False),  # the original's
    "roi": Region(band=False, inside_roi=True),
    "all": Region(band=False, inside_roi=False),
}


def volume_rois(volume: np.ndarray, settings: InferenceSettings) -> np.ndarray | None:
    """The ROI of every B-scan of a preprocessed ``(z, y, x)`` uint8 volume, ``(z, y, x)`` bool
    (:func:`bscan_roi`), when ``PREDICT_REGION`` needs it (``band``, ``roi``: :attr:`Region.needs_roi`); None for
    ``all``."""
    if not PREDICT_REGIONS[settings.predict_region].needs_roi:
        return None
    return volume_roi_masks(volume, None, settings.entropy_disk_radius, settings.entropy_threshold,
                            settings.closing_disk_radius)


def bscan_roi(bscan: np.ndarray, settings: InferenceSettings) -> np.ndarray:
    """The ROI of one preprocessed B-scan, ``(H, W)`` bool, computed as prepare_data.py computes it (no fluid
    mask at prediction time)."""
    return roi_mask(bscan, None, settings.entropy_disk_radius, settings.entropy_threshold, settings.closing_disk_radius)


def band_top(roi: np.ndarray, band: int, scaled: int, height: int) -> int:
    """First (depth-scaled) row of the band of ``band`` rows centred on the vertical middle of the ROI.

    The original (``test_model.py``) segments a band of the patch height centred on the middle of the retina's
    extent; the middle is taken between the first and last ROI row (the B-scan's middle when the ROI is empty),
    scaled from ``height`` to ``scaled`` rows, and the band kept inside the B-scan.
    """
    rows = np.flatnonzero(roi.any(axis=1))
    middle = (rows[0] + rows[-1]) / 2 if rows.size else (height - 1) / 2
    top = int(round(middle * scaled / height)) - band // 2
    return int(min(max(top, 0), scaled - band))


def place_bands(probabilities: torch.Tensor, tops: list[int], scaled: int) -> torch.Tensor:
    """Band probabilities ``(n, C, band, W)`` placed at rows ``tops`` of ``(n, C, scaled, W)`` canvases that are
    background (probability 1 for class 0) everywhere else."""
    n, channels, band, width = probabilities.shape
    canvas = probabilities.new_zeros((n, channels, scaled, width))
    canvas[:, 0] = 1.0
    for index, top in enumerate(tops):
        canvas[index, :, top:top + band] = probabilities[index]
    return canvas


def keep_inside(probabilities: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """``(n, C, H, W)`` probabilities made background (1 for class 0, 0 for the others) where ``inside`` is
    False (``(n, H, W)`` bool, or ``(n, 1, W)`` for whole columns)."""
    background = torch.zeros_like(probabilities)
    background[:, 0] = 1.0
    return torch.where(inside[:, None], probabilities, background)
