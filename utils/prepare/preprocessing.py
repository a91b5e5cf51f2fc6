"""Preprocessing of OCT volumes: vendor intensity conversion, histogram matching, median filtering.

Pure functions on arrays, then :func:`write_preprocessed_slices`, which applies them to whole cases and writes the
per-B-scan PNGs and the slice index (see :mod:`utils.io.layout`). What the step reads of the config is a
:class:`PreprocessSettings`, built once from it. All volumes are ``(z, y, x)`` = (B-scan, depth, width).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage

import config
from utils.io import layout
from utils.io.cases import Case, check_case
from utils.io.files import atomic_write_csv, atomic_write_png, atomic_write_text
from utils.io.mhd_io import Geometry, VolumeError, check_labels, read_volume
from utils.io.parallel import map_cases
from utils.io.tables import fluid_flag_columns, read_slice_index, slice_index_columns
from utils.io.vendor_files import VendorFileSettings, read_oct_volume
from utils.stage_settings import settings_from_config

N_LEVELS = 256


@dataclasses.dataclass(frozen=True)
class PreprocessSettings:
    """What the preprocess step reads of the config (reading a case, :func:`preprocess_volume`, writing its slices
    and slice-index rows), built once per run (:meth:`from_config`). Each field is the config.py setting of the same
    name in upper case (see config.py for its meaning); the defaults are config.py's, so a test names only what it
    changes.

    Attributes:
        histogram_match_vendors: vendors whose volumes are histogram matched to the reference.
        histogram_rounding: how matched values become levels, ``"truncate"`` or ``"round"``.
        median_slices_vendors: vendors given the median across B-scans.
        median_slices: its window, odd B-scans (1 = off).
        median_vendors: vendors given the in-plane median.
        median_inplane: its size, odd pixels (1 = off).
        background: the background label code.
        fluids: fluid name -> label code.
        n_classes: background and fluid classes.
        png_compress_level: 0..9, of the slice PNGs (lossless whatever the level).
        slice_layout: where the slices are written (``SLICES_SUBDIR`` and the slice folders).
        vendor_files: how vendor files are read (``VENDORS``, the spacing settings).
    """

    histogram_match_vendors: tuple[str, ...] = config.HISTOGRAM_MATCH_VENDORS
    histogram_rounding: str = config.HISTOGRAM_ROUNDING
    median_slices_vendors: tuple[str, ...] = config.MEDIAN_SLICES_VENDORS
    median_slices: int = config.MEDIAN_SLICES
    median_vendors: tuple[str, ...] = config.MEDIAN_VENDORS
    median_inplane: int = config.MEDIAN_INPLANE
    background: int = config.BACKGROUND
    fluids: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(config.FLUIDS))
    n_classes: int = config.N_CLASSES
    png_compress_level: int = config.PNG_COMPRESS_LEVEL
    slice_layout: layout.SliceLayout = dataclasses.field(default_factory=layout.SliceLayout)
    vendor_files: VendorFileSettings = dataclasses.field(default_factory=VendorFileSettings)

    @classmethod
    def from_config(cls, cfg) -> PreprocessSettings:
        """The preprocess settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg, slice_layout=layout.SliceLayout.from_config(cfg),
                                    vendor_files=VendorFileSettings.from_config(cfg))

    @property
    def label_codes(self) -> list[int]:
        """The codes reference labels may hold: the background code, then the fluids' codes."""
        return [self.background, *self.fluids.values()]


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


# HISTOGRAM_ROUNDING: how matched (float) levels become integer levels. Fidelity: the original (skimage-style
# matching, then astype(uint8)) truncates; "round" is our former choice.
HISTOGRAM_ROUNDINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "truncate": lambda levels: np.floor(levels + 1e-9),
    "round": np.rint,
}


def histogram_matching_lut(source_counts: np.ndarray, reference_counts: np.ndarray,
                           rounding: str = "truncate") -> np.ndarray:
    """Lookup table mapping the source grey levels so that their histogram matches the reference histogram.

    The same mapping as ``skimage.exposure.match_histograms`` for integer images (quantiles of the levels
    present in each, linearly interpolated), computed from the two 256-bin histograms alone, so that the
    reference travels as 256 numbers (inside checkpoints, too) instead of a whole volume.

    Args:
        source_counts: ``(256,)`` counts of the volume to be matched.
        reference_counts: ``(256,)`` counts of the reference (Spectralis) volume.
        rounding: how matched values become levels, a name in ``HISTOGRAM_ROUNDINGS``: "truncate" (cut to the
            integer below, as the original's ``astype``) or "round" (to the nearest level).

    Returns:
        ``(256,)`` uint8 lookup table; ``lut[volume]`` is the matched volume.
    """
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
    lut = HISTOGRAM_ROUNDINGS[rounding](lut)
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


def vendor_steps(vendor: str, reference_counts: np.ndarray | None, settings: PreprocessSettings,
                 source: str = "volume") -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """The steps :func:`preprocess_volume` applies to a ``vendor`` volume, in order, each ``(name, function)``
    taking and returning a ``(z, y, x)`` volume.

    Args:
        vendor, reference_counts, settings, source: as :func:`preprocess_volume`.
    """
    steps = [("intensity to 0..255", functools.partial(to_uint8_intensity, source=source))]
    if vendor in settings.histogram_match_vendors:
        steps.append(("histogram matching", functools.partial(
            _matched_to_reference, reference_counts=reference_counts, rounding=settings.histogram_rounding,
            vendor=vendor, source=source)))
    if vendor in settings.median_slices_vendors:
        steps.append(("median across B-scans", functools.partial(median_across_bscans, size=settings.median_slices)))
    if vendor in settings.median_vendors:
        steps.append((f"median in-plane {settings.median_inplane}x{settings.median_inplane}",
                      functools.partial(median_inplane, size=settings.median_inplane)))
    return steps


def preprocess_volume(volume: np.ndarray, vendor: str, reference_counts: np.ndarray | None,
                      settings: PreprocessSettings, source: str = "volume") -> np.ndarray:
    """The method's preprocessing of one OCT volume (:func:`vendor_steps`).

    Intensity to 0..255; for ``settings.histogram_match_vendors`` (Cirrus, Topcon) the histogram matched to the
    Spectralis reference; for ``settings.median_slices_vendors`` a median over each B-scan and its neighbours; for
    ``settings.median_vendors`` an in-plane median. (The original code meant the cross-B-scan median for Cirrus and
    Topcon, but an if/if/else slip skipped it for Cirrus; by default we apply it to both, as meant:
    ``MEDIAN_SLICES_VENDORS = ("Topcon",)`` is the original's behaviour.)

    Args:
        volume: ``(z, y, x)`` uint8 or uint16 raw OCT.
        vendor: one of ``VENDORS``.
        reference_counts: ``(256,)`` histogram of the reference volume; needed when ``vendor`` is matched.
        settings: which vendors get which step, the rounding and the median sizes (:class:`PreprocessSettings`).
        source: file name for error messages.

    Returns:
        ``(z, y, x)`` uint8 preprocessed volume.
    """
    for _, step in vendor_steps(vendor, reference_counts, settings, source):
        volume = step(volume)
    return volume


def histogram_reference(path: str | Path, vendor_files: VendorFileSettings, vendor: str = "Spectralis") -> dict:
    """The histogram-matching reference: ``{"path": str, "vendor": str, "counts": [256 ints]}`` of a volume (an
    ``oct.mhd`` or a vendor file, read with ``vendor_files``: :class:`utils.io.vendor_files.VendorFileSettings`, the
    vendor-file settings of the config). ``vendor`` is the volume's vendor: Spectralis as the method has it, another
    one only for a data set without Spectralis scans."""
    volume, _, _ = read_oct_volume(path, vendor_files)
    return {"path": str(path), "vendor": vendor,
            "counts": intensity_histogram(to_uint8_intensity(volume, str(path))).tolist()}


def _reference_candidates(cases: list[Case], vendors: tuple[str, ...] = ("Spectralis",)) -> list[Case]:
    """The ``oct.mhd`` cases of ``vendors`` that can be the automatic histogram reference, by path. Vendor files are
    not: ``.vol``/``.e2e``/XML exports arrive on Heyex's display scale, not on RETOUCH's uint16 scale, and their
    histogram would shift every matched Cirrus and Topcon volume."""
    return sorted((case for case in cases if case.vendor in vendors and not case.from_vendor_file),
                  key=lambda case: case.oct_path)


def _no_spectralis_note(reference: Path, vendor: str, matched_vendors: Sequence[str]) -> str:
    """The one line prepare_data.py prints when the reference is not a Spectralis volume (``matched_vendors``:
    ``HISTOGRAM_MATCH_VENDORS``)."""
    return (f"histogram reference {reference}: no Spectralis oct.mhd case, so {'/'.join(matched_vendors)} "
            f"volumes are matched to this {vendor} volume; a model trained here sees Spectralis volumes on another "
            f"intensity scale than the other vendors'. To match them to Spectralis as the method does, set "
            f"HISTOGRAM_REFERENCE to a Spectralis oct.mhd")


def choose_histogram_reference(cases: list[Case], reference_setting: str, matched_vendors: Sequence[str],
                               data_root: str | Path) -> tuple[Path, str] | None:
    """``reference_setting`` (``HISTOGRAM_REFERENCE``: a volume relative to ``data_root`` or absolute), else the
    first Spectralis ``oct.mhd`` case by path (:func:`_reference_candidates`), whether or not a case needs matching:
    a checkpoint then carries the reference, and a model trained on Spectralis alone can prepare Cirrus and Topcon
    volumes as the method does. Without any Spectralis case, the first ``oct.mhd`` of a matched vendor (of
    ``matched_vendors``, ``HISTOGRAM_MATCH_VENDORS``: Cirrus, Topcon).

    Args:
        cases: the cases found under ``data_root``.
        reference_setting: ``HISTOGRAM_REFERENCE``, a path, or ``""`` to choose among the cases.
        matched_vendors: ``HISTOGRAM_MATCH_VENDORS``, the vendors whose volumes are matched.
        data_root: the folder ``reference_setting`` may be relative to.

    Returns:
        ``(path, vendor)`` (``"Spectralis"`` for ``HISTOGRAM_REFERENCE``), or None when there is no candidate and
        no case needs matching.

    Raises:
        FileNotFoundError: ``HISTOGRAM_REFERENCE`` names no file, or cases need matching but none can be the
            reference (they all come from vendor files).
    """
    if reference_setting:
        path = Path(reference_setting)
        path = path if path.is_absolute() or path.exists() else Path(data_root) / path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: HISTOGRAM_REFERENCE names no file")
        return path, "Spectralis"
    candidates = (_reference_candidates(cases)
                  or _reference_candidates(cases, tuple(matched_vendors)))
    if candidates:
        return candidates[0].oct_path, candidates[0].vendor
    if any(case.vendor in matched_vendors for case in cases):
        raise FileNotFoundError(f"{data_root}: no oct.mhd case to match {'/'.join(matched_vendors)} "
                                f"histograms to; set HISTOGRAM_REFERENCE to a Spectralis oct.mhd")
    return None


def load_histogram_reference(cases: list[Case], reference_setting: str, settings: PreprocessSettings,
                             data_root: str | Path) -> tuple[Path | None, dict | None, list[str]]:
    """The histogram reference to match Cirrus and Topcon to, read: ``HISTOGRAM_REFERENCE`` when set, else the
    first case (by path) of :func:`choose_histogram_reference`'s vendor that can be read.

    Args:
        cases: the cases found under ``data_root``.
        reference_setting: ``HISTOGRAM_REFERENCE``, a volume (relative to ``data_root`` or absolute), or ``""`` to
            choose among the cases.
        settings: ``histogram_match_vendors`` (``HISTOGRAM_MATCH_VENDORS``) and ``vendor_files`` (how the volume
            is read) of :class:`PreprocessSettings`.
        data_root: the folder ``HISTOGRAM_REFERENCE`` may be relative to.

    Returns:
        ``(path, reference, notes)``: path and :func:`histogram_reference` (both None when there is no candidate
        and no case needs matching), and notes: the Spectralis volumes passed over (their errors come from
        preprocessing), and a reference that is not a Spectralis volume.

    Raises:
        FileNotFoundError, VolumeError, ValueError: the set reference cannot be used, or no candidate can be read
            while cases need matching.
    """
    matched_vendors = settings.histogram_match_vendors
    chosen = choose_histogram_reference(cases, reference_setting, matched_vendors, data_root)
    if chosen is None:
        return None, None, []
    path, vendor = chosen
    if reference_setting:
        return path, histogram_reference(path, settings.vendor_files), []
    passed_over = []
    for candidate in _reference_candidates(cases, (vendor,)):
        try:
            reference = histogram_reference(candidate.oct_path, settings.vendor_files, vendor)
        except (OSError, ValueError):  # the case itself is reported by the preprocess step
            passed_over.append(str(candidate.oct_path))
            continue
        notes = [f"histogram reference {candidate.oct_path}: the first {vendor} case, {', '.join(passed_over)}, "
                 f"cannot be read (reported below)"] if passed_over else []
        if vendor != "Spectralis":
            notes.append(_no_spectralis_note(candidate.oct_path, vendor, matched_vendors))
        return candidate.oct_path, reference, notes
    if not any(case.vendor in matched_vendors for case in cases):
        return None, None, []  # no Spectralis volume is readable, and none is needed: the cases report themselves
    raise FileNotFoundError(f"{data_root}: no {vendor} oct.mhd case can be read to match "
                            f"{'/'.join(matched_vendors)} histograms to; set HISTOGRAM_REFERENCE to a "
                            f"Spectralis oct.mhd")


def _case_settings(case: Case, settings: PreprocessSettings, reference: dict | None) -> dict:
    """What a case's preprocessed slices depend on; a rerun redoes a case whose settings changed."""
    matched = case.vendor in settings.histogram_match_vendors
    return {"case": case.name, "vendor": case.vendor, "oct_path": str(case.oct_path),
            "reference_path": str(case.reference_path) if case.reference_path else None,
            "histogram_reference": reference["path"] if matched and reference else None,
            "histogram_reference_counts": reference["counts"] if matched and reference else None,
            "histogram_rounding": settings.histogram_rounding if matched else None,
            "median_slices": settings.median_slices if case.vendor in settings.median_slices_vendors else 1,
            "median_inplane": settings.median_inplane if case.vendor in settings.median_vendors else 1}


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


def read_case(case: Case, settings: PreprocessSettings) -> tuple[np.ndarray, Geometry, np.ndarray | None]:
    """Reads one case as the preprocess step does: its OCT volume (an ``oct.mhd`` or a vendor file, read with
    ``settings.vendor_files``) and, when it has one, its reference labels, checked against
    ``settings.label_codes`` (:func:`check_reference_labels`).

    Returns:
        ``(volume, geometry, labels)``: ``(z, y, x)`` raw OCT (uint8, or uint16 for Spectralis), its geometry
        (spacing ``(x, y, z)`` mm), and ``(z, y, x)`` uint8 label codes or None.

    Raises:
        VolumeError: unreadable files, a reference of another size than the OCT, labels outside 0..3.
    """
    check_case(case)
    volume, geometry, _ = read_oct_volume(case.oct_path, settings.vendor_files)
    labels = None
    if case.reference_path is not None:
        labels, _ = read_volume(case.reference_path)
        labels = check_reference_labels(labels, volume.shape, settings.label_codes, case.reference_path)
    return volume, geometry, labels


def slice_rows(name: str, vendor: str, oct_path: str, shape: tuple[int, int, int], geometry: Geometry,
               labels: np.ndarray | None, settings: PreprocessSettings) -> pd.DataFrame:
    """A case's rows of the slice index: one per B-scan of its preprocessed volume.

    Args:
        name: the case's name (its slices are ``<name>_<zzz>.png`` in ``SLICES_SUBDIR/<name>``).
        vendor: its vendor.
        oct_path: its OCT file, as the ``oct_path`` column gives it.
        shape: the preprocessed volume's ``(z, y, x)`` size.
        geometry: the volume's geometry (spacing ``(x, y, z)`` mm).
        labels: ``(z, y, x)`` uint8 label codes, or None for a case without reference (blank fluid flags).
        settings: ``fluids``, ``n_classes`` and ``slice_layout`` (the ``root`` column) of :class:`PreprocessSettings`.

    Returns:
        The rows, columns :func:`utils.io.tables.slice_index_columns` (``is_<fluid>`` nullable integers 0/1).
    """
    rows = []
    root = settings.slice_layout.case_root(name)
    flag_codes = dict(zip(fluid_flag_columns(settings.fluids), settings.fluids.values()))  # is_<fluid> -> its code
    for z in range(shape[0]):
        flags = dict.fromkeys(flag_codes, pd.NA)
        if labels is not None:
            present = np.bincount(labels[z].ravel(), minlength=settings.n_classes)
            flags = {column: int(present[code] > 0) for column, code in flag_codes.items()}
        spacing = geometry.spacing_mm
        rows.append({"image_name": layout.slice_file_name(name, z), "vendor": vendor, "root": root, "slice": z,
                     **flags, "case": name, "n_slices": shape[0], "height": shape[1], "width": shape[2],
                     "spacing_x_mm": spacing[0], "spacing_y_mm": spacing[1], "spacing_z_mm": spacing[2],
                     "has_reference": labels is not None, "oct_path": oct_path})
    frame = pd.DataFrame(rows, columns=slice_index_columns(settings.fluids))
    for column in flag_codes:
        frame[column] = frame[column].astype("Int64")
    return frame


def preprocess_case(case: Case, work_dir: str | Path, settings: PreprocessSettings, reference: dict | None
                    ) -> pd.DataFrame:
    """Preprocesses one case and writes its B-scans (and label masks) as PNGs; skips a case already done.

    Args:
        case: the case to prepare.
        work_dir: output root; the case's slices go to ``settings.slice_layout.case_dir(work_dir, case.name)``.
        settings: :class:`PreprocessSettings`.
        reference: :func:`histogram_reference` of the volume matched vendors are matched to, or None.

    Returns:
        The case's rows of the slice index (columns :func:`utils.io.tables.slice_index_columns`).

    Raises:
        VolumeError: unreadable files, reference of another size than the OCT, labels outside 0..3.
    """
    slice_layout = settings.slice_layout
    folder = slice_layout.case_dir(work_dir, case.name)
    done_json, slices_csv = folder / layout.CASE_DONE_JSON, folder / layout.CASE_SLICES_CSV
    record = _case_settings(case, settings, reference)
    if done_json.is_file() and slices_csv.is_file():
        if json.loads(done_json.read_text()) == record:
            return read_slice_index(slices_csv, settings.fluids)  # names as text: a case named NA or 001 stays one
    volume, geometry, labels = read_case(case, settings)
    counts = np.asarray(reference["counts"]) if reference else None
    prepared = preprocess_volume(volume, case.vendor, counts, settings, str(case.oct_path))
    frame = slice_rows(case.name, case.vendor, str(case.oct_path), prepared.shape, geometry, labels, settings)
    for z, name in enumerate(frame["image_name"]):
        image_path, mask_path, _ = slice_layout.slice_paths(work_dir, slice_layout.case_root(case.name), name)
        atomic_write_png(image_path, prepared[z], settings.png_compress_level)
        if labels is not None:
            atomic_write_png(mask_path, labels[z], settings.png_compress_level)
    atomic_write_csv(slices_csv, frame)
    atomic_write_text(done_json, json.dumps(record))  # last: marks the case complete
    return frame


def write_preprocessed_slices(cases: list[Case], work_dir: str | Path, settings: PreprocessSettings,
                              slice_index_csv: str, reference: dict | None, workers: int = 1
                              ) -> tuple[pd.DataFrame, list[str]]:
    """The method's preprocess step (the original's ``preprocess_oct_images``) over all cases, in ``workers`` processes.

    Args:
        cases: from :func:`utils.io.cases.find_cases`.
        work_dir: output root (never inside the data root).
        settings: how volumes are read, matched, filtered and written (:class:`PreprocessSettings`, built once per
            run from the config).
        slice_index_csv: ``SLICE_INDEX_CSV``, the slice index's file name in ``work_dir``.
        reference: :func:`histogram_reference` of the Spectralis volume Cirrus/Topcon are matched to, or None.
        workers: processes.

    Returns:
        ``(slice_index, errors)``: the slice index of the cases that succeeded (written to
        ``work_dir/SLICE_INDEX_CSV`` too), and one line per failed case.
    """
    function = functools.partial(preprocess_case, work_dir=work_dir, settings=settings, reference=reference)
    frames, errors = map_cases(function, cases, workers, desc="preprocess")
    frames = [frame for frame in frames if frame is not None]
    index = (pd.concat(frames, ignore_index=True) if frames
             else pd.DataFrame(columns=slice_index_columns(settings.fluids)))
    atomic_write_csv(Path(work_dir) / slice_index_csv, index)
    return index, errors


