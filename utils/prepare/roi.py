"""ROI masks of the retina: local entropy threshold, OR fluid, binary closing with a disk, then column fill.

The method computes these with ``skimage.filters.rank.entropy(disk(15))`` and
``skimage.morphology.binary_closing(disk(55))``, which take about 1 s and 7-11 s per 1024x512 B-scan. This module
gives the same masks much faster, and :func:`roi_mask_reference` keeps the straightforward scikit-image version
that the tests compare against:

- entropy: the same local histogram entropy (bits), computed by a numba kernel that slides the disk along each
  row and updates ``sum(c * log2 c)`` as pixels enter and leave, so a pixel costs O(radius) instead of O(bins);
- closing: dilation then erosion by a disk are thresholds of exact Euclidean distance transforms (OpenCV's
  ``distanceTransform`` with ``DIST_MASK_PRECISE``, 4-5x faster than ``scipy.ndimage.distance_transform_edt`` on
  a Cirrus B-scan), which is what ``skimage.morphology.isotropic_closing`` does; we keep our own few lines to
  reproduce ``binary_closing``'s border rule (outside the image counts as background for the dilation and as
  foreground for the erosion) and to handle all-empty / all-full images.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import cv2
import numba
import numpy as np
import pandas as pd
from skimage.morphology import disk
from skimage.util import img_as_ubyte

import config
from utils.io import layout
from utils.io.files import atomic_write_png, atomic_write_text, read_png
from utils.io.parallel import map_cases
from utils.model.input_scale import normalise_input
from utils.stage_settings import settings_from_config


def _normalised_levels() -> np.ndarray:
    """Lookup table: uint8 B-scan value -> grey level the method's entropy sees.

    The method takes the entropy of the B-scan normalised as the network's input
    (:func:`utils.model.input_scale.normalise_input`, in [-1, 1)); scikit-image's rank filters convert that float
    image to uint8 with ``img_as_ubyte``, which clips the negative half to 0. So only the brighter half of the
    intensities (the retina, not the dark vitreous and noise) carries entropy.
    """
    values = normalise_input(np.arange(256, dtype=np.float32))
    return img_as_ubyte(np.clip(values, 0.0, 1.0))


ENTROPY_LEVELS = _normalised_levels()


@numba.njit(cache=True, nogil=True)
def _disk_entropy(levels: np.ndarray, half_widths: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    height, width = levels.shape
    radius = (len(half_widths) - 1) // 2
    max_count = (2 * radius + 1) ** 2 + 1
    c_log_c = np.zeros(max_count + 1, dtype=np.float64)
    for c in range(2, max_count + 1):
        c_log_c[c] = c * math.log2(c)
    out = np.empty((height, width), dtype=np.float64)
    hist = np.zeros(256, dtype=np.int64)
    for y in range(height):
        hist[:] = 0
        total = 0
        sum_c_log_c = 0.0
        for x in range(width):
            for dy in range(-radius, radius + 1):
                row = y + dy
                if row < 0 or row >= height:
                    continue
                hw = half_widths[dy + radius]
                if x == 0:
                    first, last = 0, min(hw, width - 1)
                    for col in range(first, last + 1):
                        v = levels[row, col]
                        sum_c_log_c += c_log_c[hist[v] + 1] - c_log_c[hist[v]]
                        hist[v] += 1
                        total += 1
                else:
                    leaving = x - 1 - hw
                    if leaving >= 0:
                        v = levels[row, leaving]
                        sum_c_log_c += c_log_c[hist[v] - 1] - c_log_c[hist[v]]
                        hist[v] -= 1
                        total -= 1
                    entering = x + hw
                    if entering < width:
                        v = levels[row, entering]
                        sum_c_log_c += c_log_c[hist[v] + 1] - c_log_c[hist[v]]
                        hist[v] += 1
                        total += 1
            # H = -sum p log2 p with p = c / n  ==  log2 n - sum(c log2 c) / n
            entropy = math.log2(total) - sum_c_log_c / total
            out[y, x] = entropy if entropy > 1e-9 else 0.0  # rounding; the least non-zero entropy is ~1e-3
    return out


def local_entropy(image: np.ndarray, radius: int) -> np.ndarray:
    """Local entropy in bits over a disk, as ``skimage.filters.rank.entropy(image, disk(radius))``.

    Args:
        image: ``(height, width)`` uint8 grey levels.
        radius: disk radius in pixels (the disk holds the offsets with ``dy² + dx² <= radius²``); pixels outside
            the image are left out of the local histogram, as scikit-image does.

    Returns:
        ``(height, width)`` float64 entropy in bits, 0 where the neighbourhood is constant.
    """
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a 2-D uint8 image, got shape {image.shape} dtype {image.dtype}")
    half_widths = (disk(radius).sum(axis=1).astype(np.int64) - 1) // 2  # row dy spans x in [-hw, hw]
    return _disk_entropy(np.ascontiguousarray(image), half_widths)


def binary_closing_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing with ``disk(radius)``, equal to ``skimage.morphology.binary_closing(mask, disk(radius))``.

    Args:
        mask: ``(height, width)`` bool (or 0/1).
        radius: disk radius in pixels.

    Returns:
        ``(height, width)`` bool.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    # Dilation: within radius of a foreground pixel inside the image (outside counts as background).
    dilated = _distance_to_zero(~mask) <= radius
    if dilated.all():
        return dilated
    # Erosion: farther than radius from every background pixel inside the image (outside counts as foreground).
    return _distance_to_zero(dilated) > radius


def _distance_to_zero(mask: np.ndarray) -> np.ndarray:
    """Exact Euclidean distance (pixels, float32) of every pixel to the nearest False pixel of ``mask`` inside the
    image (0 on False pixels), as ``scipy.ndimage.distance_transform_edt``; the mask must hold a False pixel."""
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def fill_columns(mask: np.ndarray) -> np.ndarray:
    """Fills each column between its first and last foreground pixel (inclusive); empty columns stay empty.

    Args:
        mask: ``(height, width)`` bool.

    Returns:
        ``(height, width)`` bool.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.arange(mask.shape[0])[:, None]
    has_any = mask.any(axis=0)
    first = np.where(has_any, mask.argmax(axis=0), mask.shape[0])
    last = np.where(has_any, mask.shape[0] - 1 - mask[::-1].argmax(axis=0), -1)
    return (rows >= first) & (rows <= last)


def roi_mask(bscan: np.ndarray, fluid_mask: np.ndarray | None, entropy_radius: int = 15,
             threshold: float = 1e-2, closing_radius: int = 55) -> np.ndarray:
    """The retina ROI of one preprocessed B-scan (the original's ``create_roi_masks`` for one image).

    Entropy of the normalised B-scan over ``disk(entropy_radius)``, divided by its maximum, above ``threshold``;
    OR-ed with the fluid mask; closed with ``disk(closing_radius)``; each column filled between its first and
    last ROI pixel.

    Args:
        bscan: ``(height, width)`` uint8 preprocessed B-scan (0..255).
        fluid_mask: ``(height, width)`` labels (non-zero = fluid), or None for a case without reference.
        entropy_radius: disk radius of the local entropy.
        threshold: on entropy / max entropy, in [0, 1].
        closing_radius: disk radius of the binary closing.

    Returns:
        ``(height, width)`` bool ROI mask.
    """
    entropy = local_entropy(ENTROPY_LEVELS[bscan], entropy_radius)
    roi = entropy / (entropy.max() + 1e-16) > threshold
    if fluid_mask is not None:
        roi |= fluid_mask > 0
    return fill_columns(binary_closing_disk(roi, closing_radius))


def roi_mask_reference(bscan: np.ndarray, fluid_mask: np.ndarray | None, entropy_radius: int = 15,
                       threshold: float = 1e-2, closing_radius: int = 55) -> np.ndarray:
    """:func:`roi_mask` written the straightforward scikit-image way (slow: seconds per full B-scan).

    Kept as the definition the fast version is tested against.
    """
    import warnings

    from skimage.filters.rank import entropy as rank_entropy
    from skimage.morphology import binary_closing

    normalised = normalise_input(bscan.astype(np.float32))
    # rank filters warn that they convert the float image to uint8; binary_closing is deprecated in 0.26
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        entropy = rank_entropy(normalised, disk(entropy_radius))
        roi = entropy / (entropy.max() + 1e-16) > threshold
        if fluid_mask is not None:
            roi |= fluid_mask > 0
        closed = binary_closing(roi, disk(closing_radius))
    filled = closed.copy()
    for column in range(closed.shape[1]):
        rows = np.nonzero(closed[:, column])[0]
        if len(rows):
            filled[rows[0]:rows[-1] + 1, column] = True
    return filled


def volume_roi_masks(volume: np.ndarray, labels: np.ndarray | None, entropy_radius: int, threshold: float,
                     closing_radius: int) -> np.ndarray:
    """The ROI of every B-scan of a preprocessed volume: :func:`roi_mask` of each, with its fluid mask.

    Args:
        volume: ``(z, y, x)`` uint8 preprocessed volume (0..255).
        labels: ``(z, y, x)`` label codes (non-zero = fluid), or None for a case without reference.
        entropy_radius, threshold, closing_radius: as :func:`roi_mask`.

    Returns:
        ``(z, y, x)`` bool ROI masks.
    """
    masks = np.zeros(volume.shape, bool)
    for z, bscan in enumerate(volume):
        masks[z] = roi_mask(bscan, None if labels is None else labels[z], entropy_radius, threshold, closing_radius)
    return masks


ROI_VALUE = 255  # ROI pixels in the PNG (0 elsewhere), so the masks are visible in any image viewer


def roi_png(roi: np.ndarray) -> np.ndarray:
    """A bool ROI mask as its PNG stores it: uint8, ``ROI_VALUE`` inside, 0 outside."""
    return roi.astype(np.uint8) * np.uint8(ROI_VALUE)


@dataclasses.dataclass(frozen=True)
class RoiSettings:
    """What the roi step (:func:`write_roi_masks`) reads of the config, built once per run (:meth:`from_config`).
    Each field is the config.py setting of the same name in upper case (see config.py for its meaning); the defaults
    are config.py's, so a test names only what it changes.

    Attributes:
        entropy_disk_radius: pixels, the local entropy's disk (:func:`roi_mask`'s ``entropy_radius``).
        entropy_threshold: on entropy / max entropy of the B-scan, in [0, 1].
        closing_disk_radius: pixels, the binary closing's disk.
        png_compress_level: 0..9, of the ROI PNGs (lossless whatever the level).
        slice_layout: where the slices are read and the ROI masks written (the slice folders).
    """

    entropy_disk_radius: int = config.ENTROPY_DISK_RADIUS
    entropy_threshold: float = config.ENTROPY_THRESHOLD
    closing_disk_radius: int = config.CLOSING_DISK_RADIUS
    png_compress_level: int = config.PNG_COMPRESS_LEVEL
    slice_layout: layout.SliceLayout = dataclasses.field(default_factory=layout.SliceLayout)

    @classmethod
    def from_config(cls, cfg) -> RoiSettings:
        """The roi settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg, slice_layout=layout.SliceLayout.from_config(cfg))


def _roi_settings(case_folder: Path, settings: RoiSettings) -> dict:
    """What a case's ROI masks depend on: the ROI parameters and the preprocessed slices they were made from."""
    return {"entropy_disk_radius": settings.entropy_disk_radius, "entropy_threshold": settings.entropy_threshold,
            "closing_disk_radius": settings.closing_disk_radius,
            "preprocess": json.loads((case_folder / layout.CASE_DONE_JSON).read_text())}


def roi_masks_of_case(rows: pd.DataFrame, work_dir: str | Path, settings: RoiSettings) -> int:
    """Writes the ROI mask PNG of every B-scan of one case (``rows``: its slice-index rows); skips a done case.

    Args:
        rows: the case's slice-index rows (``root``, ``image_name``, ``has_reference`` columns).
        work_dir: where the slices are.
        settings: :class:`RoiSettings`.

    Returns:
        The number of B-scans of the case.
    """
    root = rows["root"].iloc[0]
    folder = Path(work_dir) / root
    done_json = folder / layout.ROI_DONE_JSON
    record = _roi_settings(folder, settings)
    if done_json.is_file() and json.loads(done_json.read_text()) == record:
        return len(rows)
    for row in rows.itertuples(index=False):
        image_path, mask_path, roi_path = settings.slice_layout.slice_paths(work_dir, row.root, row.image_name)
        fluid = read_png(mask_path) if row.has_reference else None
        roi = roi_mask(read_png(image_path), fluid, settings.entropy_disk_radius, settings.entropy_threshold,
                       settings.closing_disk_radius)
        atomic_write_png(roi_path, roi_png(roi), settings.png_compress_level)
    atomic_write_text(done_json, json.dumps(record))  # last: marks the case complete
    return len(rows)


def write_roi_masks(slice_index: pd.DataFrame, work_dir: str | Path, settings: RoiSettings, workers: int = 1
                    ) -> list[str]:
    """The method's roi step (the original's ``create_roi_masks``): one ROI mask PNG per B-scan of the slice index.

    Args:
        slice_index: rows written by :func:`utils.prepare.preprocessing.write_preprocessed_slices`.
        work_dir: where the slices are.
        settings: the entropy and closing radii, the threshold, the PNG level and the slice folders
            (:class:`RoiSettings`, built once per run from the config).
        workers: processes.

    Returns:
        One line per case that failed.
    """
    groups = [rows for _, rows in slice_index.groupby("case", sort=False)]
    function = functools.partial(roi_masks_of_case, work_dir=work_dir, settings=settings)
    _, errors = map_cases(function, groups, workers, desc="roi masks")
    return errors
