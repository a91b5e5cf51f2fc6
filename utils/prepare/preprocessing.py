"""Preprocessing of OCT volumes: vendor intensity conversion, histogram matching, median filtering.

Pure functions on arrays, then :func:`preprocess_oct_images`, which applies them to whole cases and writes the
per-B-scan PNGs and the slice index (see :mod:`utils.io.layout`). All volumes are ``(z, y, x)`` = (B-scan, depth,
width).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

from utils.io import layout
from utils.io.cases import Case, check_case
from utils.io.files import atomic_write_csv, atomic_write_png, atomic_write_text
from utils.io.mhd_io import Geometry, VolumeError, check_labels, read_volume
from utils.io.parallel import map_cases
from utils.io.tables import read_slice_index, slice_index_columns
from utils.io.vendor_files import read_oct_volume

N_LEVELS = 256


def to_uint8_intensity(volume: np.ndarray, source: str = "volume") -> np.ndarray:
    """OCT intensities as uint8 0..255, the common scale of all vendors.

    Cirrus and Topcon volumes are uint8 already. Spectralis volumes are uint16 and are scaled linearly,
    ``floor(v / 65536 * 255)``, as the method does.

    Args:
        volume: ``(z, y, x)`` uint8 or uint16.
        source: file name for the error message.

    Returns:
        ``(z, y, x)`` uint8.

    Raises:
        ValueError: any other dtype.
    """
    if volume.dtype == np.uint8:
        return volume
    if volume.dtype == np.uint16:
        return (volume.astype(np.float32) * np.float32(255.0 / 65536.0)).astype(np.uint8)
    raise ValueError(f"{source}: OCT voxels are {volume.dtype}; expected uint8 (Cirrus, Topcon) or uint16 "
                     f"(Spectralis)")


HISTOGRAM_CHUNK_VOXELS = 2 ** 23  # OpenCV counts in float32: exact up to 2**24 per bin, so chunks stay below


def intensity_histogram(volume: np.ndarray) -> np.ndarray:
    """Counts of each grey level 0..255 of a uint8 volume (any shape, at least 1-D), shape ``(256,)`` int64.

    OpenCV's ``calcHist`` on chunks of at most ``HISTOGRAM_CHUNK_VOXELS`` voxels, summed exactly in int64: the same
    counts as ``np.bincount`` (tested), about 40x faster on a Cirrus volume.
    """
    volume = np.asarray(volume)
    if volume.dtype != np.uint8:
        raise ValueError(f"expected a uint8 volume, got {volume.dtype}")
    if volume.size == 0:
        return np.zeros(N_LEVELS, np.int64)
    voxels = np.ascontiguousarray(volume).reshape(-1)
    counts = np.zeros(N_LEVELS, np.int64)
    for start in range(0, voxels.size, HISTOGRAM_CHUNK_VOXELS):
        chunk = voxels[start:start + HISTOGRAM_CHUNK_VOXELS]
        counts += cv2.calcHist([chunk], [0], None, [N_LEVELS], [0, N_LEVELS]).ravel().astype(np.int64)
    return counts


def histogram_matching_lut(source_counts: np.ndarray, reference_counts: np.ndarray,
                           rounding: str = "truncate") -> np.ndarray:
    """Lookup table mapping the source grey levels so that their histogram matches the reference histogram.

    The same mapping as ``skimage.exposure.match_histograms`` for integer images (quantiles of the levels
    present in each, linearly interpolated), computed from the two 256-bin histograms alone, so that the
    reference travels as 256 numbers (inside checkpoints, too) instead of a whole volume.

    Args:
        source_counts: ``(256,)`` counts of the volume to be matched.
        reference_counts: ``(256,)`` counts of the reference (Spectralis) volume.
        rounding: how matched values become levels: "truncate" (cut to the integer below, as the original's
            ``astype``) or "round" (to the nearest level).

    Returns:
        ``(256,)`` uint8 lookup table; ``lut[volume]`` is the matched volume.
    """
    if rounding not in ("truncate", "round"):
        raise ValueError(f"HISTOGRAM_ROUNDING must be 'truncate' or 'round', got {rounding!r}")
    source_counts = np.asarray(source_counts, dtype=np.float64)
    reference_counts = np.asarray(reference_counts, dtype=np.float64)
    if source_counts.shape != (N_LEVELS,) or reference_counts.shape != (N_LEVELS,):
        raise ValueError(f"expected two (256,) histograms, got {source_counts.shape} and {reference_counts.shape}")
    if source_counts.sum() == 0 or reference_counts.sum() == 0:
        raise ValueError("cannot match histograms of an empty volume")
    levels = np.arange(N_LEVELS, dtype=np.float64)
    src_present = source_counts > 0
    ref_present = reference_counts > 0
    src_quantiles = np.cumsum(source_counts[src_present]) / source_counts.sum()
    ref_quantiles = np.cumsum(reference_counts[ref_present]) / reference_counts.sum()
    mapped = np.interp(src_quantiles, ref_quantiles, levels[ref_present])
    lut = levels.copy()  # levels absent from the source never occur, so their entry does not matter
    lut[src_present] = mapped
    # Fidelity: the original (skimage-style matching, then astype(uint8)) truncates; "round" is our former choice.
    lut = np.floor(lut + 1e-9) if rounding == "truncate" else np.rint(lut)
    return np.clip(lut, 0, N_LEVELS - 1).astype(np.uint8)


def match_histogram(volume: np.ndarray, reference_counts: np.ndarray, rounding: str = "truncate") -> np.ndarray:
    """``volume`` (uint8, any shape) with its whole-volume histogram matched to ``reference_counts``; the lookup
    table is applied with OpenCV's ``LUT`` (the same values as ``lut[volume]``, faster)."""
    lut = histogram_matching_lut(intensity_histogram(volume), reference_counts, rounding)
    rows = np.ascontiguousarray(volume).reshape(-1, volume.shape[-1])
    return cv2.LUT(rows, lut).reshape(volume.shape)


def median_across_bscans(volume: np.ndarray, size: int = 3) -> np.ndarray:
    """Median over each B-scan and its neighbours (``size`` B-scans, odd); the first and last B-scans keep
    their own values where the window would leave the volume (scipy's ``reflect`` border), as in the method.

    Args:
        volume: ``(z, y, x)`` uint8.
        size: odd window length along z; 1 returns the volume unchanged.
    """
    if size <= 1:
        return volume
    if size % 2 == 0:
        raise ValueError(f"MEDIAN_SLICES must be odd, got {size}")
    if size == 3 and volume.shape[0] >= 3:
        # median of three as min/max: 10x faster than the generic filter
        previous, current, following = volume[:-2], volume[1:-1], volume[2:]
        out = volume.copy()
        out[1:-1] = np.maximum(np.minimum(previous, current),
                               np.minimum(np.maximum(previous, current), following))
        return out
    return ndimage.median_filter(volume, size=(size, 1, 1), mode="reflect")


def median_inplane(volume: np.ndarray, size: int = 3) -> np.ndarray:
    """``size`` x ``size`` median within each B-scan (scipy's ``reflect`` border); 1 returns the volume unchanged.

    The 3 x 3 median of a uint8 volume goes through OpenCV's ``medianBlur``, bit-identical to scipy's there (for
    a radius of 1, scipy's half-sample ``reflect`` repeats the edge pixel, as OpenCV's replicated border does) and
    much faster (``bench/bench_prepare.py`` times the median); other sizes and dtypes use scipy.
    """
    if size <= 1:
        return volume
    if size % 2 == 0:
        raise ValueError(f"MEDIAN_INPLANE must be odd, got {size}")
    if size == 3 and volume.dtype == np.uint8:
        out = np.empty_like(volume)
        for z, bscan in enumerate(volume):
            out[z] = cv2.medianBlur(np.ascontiguousarray(bscan), 3)
        return out
    return ndimage.median_filter(volume, size=(1, size, size), mode="reflect")


def _matched_to_reference(volume: np.ndarray, reference_counts: np.ndarray | None, rounding: str, vendor: str,
                          source: str) -> np.ndarray:
    """:func:`match_histogram`, refusing a missing reference when the volume comes to be matched."""
    if reference_counts is None:
        raise ValueError(f"{source}: {vendor} volumes are histogram matched, but no reference histogram "
                         f"was given (set HISTOGRAM_REFERENCE to a Spectralis oct.mhd)")
    return match_histogram(volume, reference_counts, rounding)


def preprocessing_steps(vendor: str, reference_counts: np.ndarray | None, cfg, source: str = "volume"
                        ) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """The steps :func:`preprocess_volume` applies to a ``vendor`` volume, in order, each ``(name, function)``
    taking and returning a ``(z, y, x)`` volume (``bench/bench_prepare.py`` times them one by one).

    Args:
        vendor, reference_counts, cfg, source: as :func:`preprocess_volume`.
    """
    steps = [("intensity to 0..255", functools.partial(to_uint8_intensity, source=source))]
    if vendor in cfg.HISTOGRAM_MATCH_VENDORS:
        steps.append(("histogram matching", functools.partial(
            _matched_to_reference, reference_counts=reference_counts, rounding=cfg.HISTOGRAM_ROUNDING, vendor=vendor,
            source=source)))
    if vendor in cfg.MEDIAN_SLICES_VENDORS:
        steps.append(("median across B-scans", functools.partial(median_across_bscans, size=cfg.MEDIAN_SLICES)))
    if vendor in cfg.MEDIAN_VENDORS:
        steps.append((f"median in-plane {cfg.MEDIAN_INPLANE}x{cfg.MEDIAN_INPLANE}",
                      functools.partial(median_inplane, size=cfg.MEDIAN_INPLANE)))
    return steps


def preprocess_volume(volume: np.ndarray, vendor: str, reference_counts: np.ndarray | None, cfg,
                      source: str = "volume") -> np.ndarray:
    """The method's preprocessing of one OCT volume (:func:`preprocessing_steps`).

    Intensity to 0..255; for ``cfg.HISTOGRAM_MATCH_VENDORS`` (Cirrus, Topcon) the histogram matched to the
    Spectralis reference; for ``cfg.MEDIAN_SLICES_VENDORS`` a median over each B-scan and its neighbours; for
    ``cfg.MEDIAN_VENDORS`` an in-plane median. (The original code meant the cross-B-scan median for Cirrus and
    Topcon, but an if/if/else slip skipped it for Cirrus; by default we apply it to both, as meant:
    ``MEDIAN_SLICES_VENDORS = ("Topcon",)`` is the original's behaviour.)

    Args:
        volume: ``(z, y, x)`` uint8 or uint16 raw OCT.
        vendor: one of ``cfg.VENDORS``.
        reference_counts: ``(256,)`` histogram of the reference volume; needed when ``vendor`` is matched.
        cfg: the effective config.
        source: file name for error messages.

    Returns:
        ``(z, y, x)`` uint8 preprocessed volume.
    """
    for _, step in preprocessing_steps(vendor, reference_counts, cfg, source):
        volume = step(volume)
    return volume


def histogram_reference(path: str | Path, cfg, vendor: str = "Spectralis") -> dict:
    """The histogram-matching reference: ``{"path": str, "vendor": str, "counts": [256 ints]}`` of a volume (an
    ``oct.mhd`` or a vendor file; ``cfg`` gives the vendor files' spacing settings). ``vendor`` is the volume's
    vendor: Spectralis as the method has it, another one only for a data set without Spectralis scans."""
    volume, _, _ = read_oct_volume(path, cfg)
    return {"path": str(path), "vendor": vendor,
            "counts": intensity_histogram(to_uint8_intensity(volume, str(path))).tolist()}


def _reference_candidates(cases: list[Case], vendors: tuple[str, ...] = ("Spectralis",)) -> list[Case]:
    """The ``oct.mhd`` cases of ``vendors`` that can be the automatic histogram reference, by path. Vendor files are
    not: ``.vol``/``.e2e``/XML exports arrive on Heyex's display scale, not on RETOUCH's uint16 scale, and their
    histogram would shift every matched Cirrus and Topcon volume."""
    return sorted((case for case in cases if case.vendor in vendors and not case.from_vendor_file),
                  key=lambda case: case.oct_path)


def _no_spectralis_note(reference: Path, vendor: str, cfg) -> str:
    """The one line prepare_data.py prints when the reference is not a Spectralis volume."""
    return (f"histogram reference {reference}: no Spectralis oct.mhd case, so {'/'.join(cfg.HISTOGRAM_MATCH_VENDORS)} "
            f"volumes are matched to this {vendor} volume; a model trained here sees Spectralis volumes on another "
            f"intensity scale than the other vendors'. To match them to Spectralis as the method does, set "
            f"HISTOGRAM_REFERENCE to a Spectralis oct.mhd")


def choose_histogram_reference(cases: list[Case], cfg, data_root: str | Path) -> tuple[Path, str] | None:
    """``cfg.HISTOGRAM_REFERENCE`` (relative to ``data_root`` or absolute), else the first Spectralis ``oct.mhd``
    case by path (:func:`_reference_candidates`), whether or not a case needs matching: a checkpoint then carries
    the reference, and a model trained on Spectralis alone can prepare Cirrus and Topcon volumes as the method does.
    Without any Spectralis case, the first ``oct.mhd`` of a matched vendor (Cirrus, Topcon).

    Returns:
        ``(path, vendor)`` (``"Spectralis"`` for ``HISTOGRAM_REFERENCE``), or None when there is no candidate and
        no case needs matching.

    Raises:
        FileNotFoundError: ``HISTOGRAM_REFERENCE`` names no file, or cases need matching but none can be the
            reference (they all come from vendor files).
    """
    if cfg.HISTOGRAM_REFERENCE:
        path = Path(cfg.HISTOGRAM_REFERENCE)
        path = path if path.is_absolute() or path.exists() else Path(data_root) / path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: HISTOGRAM_REFERENCE names no file")
        return path, "Spectralis"
    candidates = (_reference_candidates(cases)
                  or _reference_candidates(cases, tuple(cfg.HISTOGRAM_MATCH_VENDORS)))
    if candidates:
        return candidates[0].oct_path, candidates[0].vendor
    if any(case.vendor in cfg.HISTOGRAM_MATCH_VENDORS for case in cases):
        raise FileNotFoundError(f"{data_root}: no oct.mhd case to match {'/'.join(cfg.HISTOGRAM_MATCH_VENDORS)} "
                                f"histograms to; set HISTOGRAM_REFERENCE to a Spectralis oct.mhd")
    return None


def load_histogram_reference(cases: list[Case], cfg, data_root: str | Path
                             ) -> tuple[Path | None, dict | None, list[str]]:
    """The histogram reference to match Cirrus and Topcon to, read: ``HISTOGRAM_REFERENCE`` when set, else the
    first case (by path) of :func:`choose_histogram_reference`'s vendor that can be read.

    Returns:
        ``(path, reference, notes)``: path and :func:`histogram_reference` (both None when there is no candidate
        and no case needs matching), and notes: the Spectralis volumes passed over (their errors come from
        preprocessing), and a reference that is not a Spectralis volume.

    Raises:
        FileNotFoundError, VolumeError, ValueError: the set reference cannot be used, or no candidate can be read
            while cases need matching.
    """
    chosen = choose_histogram_reference(cases, cfg, data_root)
    if chosen is None:
        return None, None, []
    path, vendor = chosen
    if cfg.HISTOGRAM_REFERENCE:
        return path, histogram_reference(path, cfg), []
    passed_over = []
    for candidate in _reference_candidates(cases, (vendor,)):
        try:
            reference = histogram_reference(candidate.oct_path, cfg, vendor)
        except (OSError, ValueError):  # the case itself is reported by the preprocess step
            passed_over.append(str(candidate.oct_path))
            continue
        notes = [f"histogram reference {candidate.oct_path}: the first {vendor} case, {', '.join(passed_over)}, "
                 f"cannot be read (reported below)"] if passed_over else []
        if vendor != "Spectralis":
            notes.append(_no_spectralis_note(candidate.oct_path, vendor, cfg))
        return candidate.oct_path, reference, notes
    if not any(case.vendor in cfg.HISTOGRAM_MATCH_VENDORS for case in cases):
        return None, None, []  # no Spectralis volume is readable, and none is needed: the cases report themselves
    raise FileNotFoundError(f"{data_root}: no {vendor} oct.mhd case can be read to match "
                            f"{'/'.join(cfg.HISTOGRAM_MATCH_VENDORS)} histograms to; set HISTOGRAM_REFERENCE to a "
                            f"Spectralis oct.mhd")


def _case_settings(case: Case, cfg, reference: dict | None) -> dict:
    """What a case's preprocessed slices depend on; a rerun redoes a case whose settings changed."""
    matched = case.vendor in cfg.HISTOGRAM_MATCH_VENDORS
    return {"case": case.name, "vendor": case.vendor, "oct_path": str(case.oct_path),
            "reference_path": str(case.reference_path) if case.reference_path else None,
            "histogram_reference": reference["path"] if matched and reference else None,
            "histogram_reference_counts": reference["counts"] if matched and reference else None,
            "histogram_rounding": cfg.HISTOGRAM_ROUNDING if matched else None,
            "median_slices": cfg.MEDIAN_SLICES if case.vendor in cfg.MEDIAN_SLICES_VENDORS else 1,
            "median_inplane": cfg.MEDIAN_INPLANE if case.vendor in cfg.MEDIAN_VENDORS else 1}


def check_reference_labels(labels: np.ndarray, shape: tuple[int, ...], allowed_codes: Sequence[int],
                           source: str | Path) -> np.ndarray:
    """A case's reference labels checked against its OCT volume, as uint8.

    Args:
        labels: ``(z, y, x)`` integer label codes.
        shape: the OCT volume's ``(z, y, x)`` size.
        allowed_codes: the background code and the fluid codes (``BACKGROUND``, the values of ``FLUIDS``).
        source: names the labels in error messages.

    Returns:
        ``(z, y, x)`` uint8 label codes.

    Raises:
        VolumeError: another size than the OCT's, a non-integer dtype or other codes; the message names ``source``.
    """
    if labels.shape != tuple(shape):
        raise VolumeError(f"{source}: size {labels.shape} differs from its oct.mhd {tuple(shape)}")
    # negative, fractional or too-large codes would be cast silently by astype(uint8)
    check_labels(labels, allowed_codes, source)
    return labels.astype(np.uint8)


def read_case(case: Case, cfg) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
    """Reads one case as the preprocess step does: its OCT volume (an ``oct.mhd`` or a vendor file; ``cfg`` gives
    the vendor files' spacing settings) and, when it has one, its reference labels
    (:func:`check_reference_labels`).

    Returns:
        ``(volume, geometry, labels)``: ``(z, y, x)`` raw OCT (uint8, or uint16 for Spectralis), its geometry
        (spacing ``(x, y, z)`` mm), and ``(z, y, x)`` uint8 label codes or None.

    Raises:
        VolumeError: unreadable files, a reference of another size than the OCT, labels outside 0..3.
    """
    check_case(case)
    volume, geometry, _ = read_oct_volume(case.oct_path, cfg)
    labels = None
    if case.reference_path is not None:
        labels, _ = read_volume(case.reference_path)
        labels = check_reference_labels(labels, volume.shape, [cfg.BACKGROUND, *cfg.FLUIDS.values()],
                                        case.reference_path)
    return volume, geometry, labels


def slice_rows(name: str, vendor: str, oct_path: str, shape: tuple[int, int, int], geometry: Geometry,
               labels: np.ndarray | None, cfg) -> pd.DataFrame:
    """A case's rows of the slice index: one per B-scan of its preprocessed volume.

    Args:
        name: the case's name (its slices are ``<name>_<zzz>.png`` in ``SLICES_SUBDIR/<name>``).
        vendor: its vendor.
        oct_path: its OCT file, as the ``oct_path`` column gives it.
        shape: the preprocessed volume's ``(z, y, x)`` size.
        geometry: the volume's geometry (spacing ``(x, y, z)`` mm).
        labels: ``(z, y, x)`` uint8 label codes, or None for a case without reference (blank fluid flags).
        cfg: the effective config (``FLUIDS``, ``N_CLASSES``, ``SLICES_SUBDIR``).

    Returns:
        The rows, columns :func:`utils.io.tables.slice_index_columns` (``is_<fluid>`` nullable integers 0/1).
    """
    rows = []
    root = layout.case_root(name, cfg)
    for z in range(shape[0]):
        flags = {fluid: pd.NA for fluid in cfg.FLUIDS}
        if labels is not None:
            present = np.bincount(labels[z].ravel(), minlength=cfg.N_CLASSES)
            flags = {fluid: int(present[code] > 0) for fluid, code in cfg.FLUIDS.items()}
        spacing = geometry.spacing_mm
        rows.append({"image_name": layout.slice_file_name(name, z), "vendor": vendor, "root": root,
                     "slice": z, **{f"is_{fluid}": flag for fluid, flag in flags.items()}, "case": name,
                     "n_slices": shape[0], "height": shape[1], "width": shape[2],
                     "spacing_x_mm": spacing[0], "spacing_y_mm": spacing[1], "spacing_z_mm": spacing[2],
                     "has_reference": labels is not None, "oct_path": oct_path})
    frame = pd.DataFrame(rows, columns=slice_index_columns(cfg.FLUIDS))
    for fluid in cfg.FLUIDS:
        frame[f"is_{fluid}"] = frame[f"is_{fluid}"].astype("Int64")
    return frame


def preprocess_case(case: Case, work_dir: str | Path, cfg, reference: dict | None) -> pd.DataFrame:
    """Preprocesses one case and writes its B-scans (and label masks) as PNGs; skips a case already done.

    Returns:
        The case's rows of the slice index (columns :func:`utils.io.tables.slice_index_columns`).

    Raises:
        VolumeError: unreadable files, reference of another size than the OCT, labels outside 0..3.
    """
    folder = layout.case_dir(work_dir, case.name, cfg)
    done_json, slices_csv = folder / layout.CASE_DONE_JSON, folder / layout.CASE_SLICES_CSV
    settings = _case_settings(case, cfg, reference)
    if done_json.is_file() and slices_csv.is_file():
        if json.loads(done_json.read_text()) == settings:
            return read_slice_index(slices_csv, cfg.FLUIDS)  # names as text: a case named NA or 001 stays one
    volume, geometry, labels = read_case(case, cfg)
    counts = np.asarray(reference["counts"]) if reference else None
    prepared = preprocess_volume(volume, case.vendor, counts, cfg, str(case.oct_path))
    frame = slice_rows(case.name, case.vendor, str(case.oct_path), prepared.shape, geometry, labels, cfg)
    for z, name in enumerate(frame["image_name"]):
        image_path, mask_path, _ = layout.slice_paths(work_dir, layout.case_root(case.name, cfg), name, cfg)
        atomic_write_png(image_path, prepared[z], cfg.PNG_COMPRESS_LEVEL)
        if labels is not None:
            atomic_write_png(mask_path, labels[z], cfg.PNG_COMPRESS_LEVEL)
    atomic_write_csv(slices_csv, frame)
    atomic_write_text(done_json, json.dumps(settings))  # last: marks the case complete
    return frame


def preprocess_oct_images(cases: list[Case], work_dir: str | Path, cfg, reference: dict | None,
                          workers: int = 1) -> tuple[pd.DataFrame, list[str]]:
    """The method's ``preprocess_oct_images`` step over all cases, in ``workers`` processes.

    Args:
        cases: from :func:`utils.io.cases.find_cases`.
        work_dir: output root (never inside the data root).
        cfg: effective config.
        reference: :func:`histogram_reference` of the Spectralis volume Cirrus/Topcon are matched to, or None.
        workers: processes.

    Returns:
        ``(slice_index, errors)``: the slice index of the cases that succeeded (written to
        ``work_dir/SLICE_INDEX_CSV`` too), and one line per failed case.
    """
    function = functools.partial(preprocess_case, work_dir=work_dir, cfg=cfg, reference=reference)
    frames, errors = map_cases(function, cases, workers, desc="preprocess")
    frames = [frame for frame in frames if frame is not None]
    index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=slice_index_columns(cfg.FLUIDS))
    atomic_write_csv(Path(work_dir) / cfg.SLICE_INDEX_CSV, index)
    return index, errors


