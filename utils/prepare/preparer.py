"""prepare_data.py's per-volume work as a Python API: ``Preparer(...).prepare(path_or_array)``.

The settings and the histogram reference are loaded once, then any number of volumes go through the functions
prepare_data.py's preprocess and roi steps call: :func:`utils.prepare.preprocessing.read_case` (a file),
:func:`~utils.prepare.preprocessing.preprocess_volume`, :func:`~utils.prepare.preprocessing.slice_rows` and
:func:`utils.prepare.roi.roi_mask` (through :func:`~utils.prepare.roi.volume_roi_masks`), with the same settings. So
a volume's B-scans are the PNGs prepare_data.py writes (``SLICES_SUBDIR/<case>/{oct,reference,roi}/``) and its rows
those of the slice index, given the histogram reference prepare_data.py recorded. Nothing is written; the split
(a step over all cases) stays prepare_data.py's.

Example::

    from utils.io.mhd_io import read_volume
    from utils.prepare.preparer import Preparer

    preparer = Preparer(histogram_reference="work/histogram_reference.json")  # the one prepare_data.py recorded
    case = preparer.prepare("data/Cirrus/TRAIN001/oct.mhd")  # labels from the reference.mhd beside it
    print(case.name, case.vendor, case.image.shape, case.image.dtype, f"ROI {case.roi.mean():.0%}")
    volume, geometry = read_volume("data/Cirrus/TRAIN001/oct.mhd")
    same = preparer.prepare(volume, geometry, vendor="Cirrus", labels=case.labels, name="TRAIN001")
    print((same.image == case.image).all(), (same.roi == case.roi).all())
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from utils.configuration import keyword_overrides, load_config
from utils.io.cases import REFERENCE_FILE, file_case
from utils.io.mhd_io import Geometry, check_array_volume
from utils.prepare.preprocessing import (N_LEVELS, PreprocessSettings, check_reference_labels, histogram_reference,
                                         load_histogram_reference, preprocess_volume, read_case, slice_rows)
from utils.prepare.roi import RoiSettings, roi_png, volume_roi_masks


@dataclasses.dataclass(frozen=True)
class PreparedVolume:
    """One volume prepared by :meth:`Preparer.prepare`: what prepare_data.py writes for it, as arrays.

    Attributes:
        name: the case name (its slices are ``<name>_<zzz>.png``, z zero-padded to 3 digits).
        vendor: the vendor whose preprocessing the volume got.
        geometry: the input's geometry (spacing ``(x, y, z)`` mm).
        image: ``(z, y, x)`` uint8 preprocessed volume, 0..255: B-scan z is ``oct/<name>_<zzz>.png``.
        labels: ``(z, y, x)`` uint8 label codes (0 background, then ``FLUIDS``: IRF 1, SRF 2, PED 3), B-scan z being
            ``reference/<name>_<zzz>.png``; None for a volume without reference.
        roi: ``(z, y, x)`` bool ROI masks (the retina, with the fluid): B-scan z is ``roi/<name>_<zzz>.png``
            (:func:`utils.prepare.roi.roi_png`: 255 inside, 0 outside); None when not asked for.
        slice_index: the volume's rows of ``slice_index.csv`` (and of ``SLICES_SUBDIR/<name>/slices.csv``), one per
            B-scan: ``image_name``, ``is_<fluid>`` flags (blank without reference), size, spacing, ...
    """

    name: str
    vendor: str
    geometry: Geometry
    image: np.ndarray
    labels: np.ndarray | None
    roi: np.ndarray | None
    slice_index: pd.DataFrame

    def slices(self) -> Iterator[tuple[str, np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """The B-scans as prepare_data.py writes them: ``(file name, image, label codes, ROI)`` per B-scan z, each
        ``(y, x)`` uint8 (the ROI 0/255 as its PNG holds it); the labels or ROI None where the volume has none."""
        for z, file_name in enumerate(self.slice_index["image_name"]):
            yield (file_name, self.image[z], None if self.labels is None else self.labels[z],
                   None if self.roi is None else roi_png(self.roi[z]))


def _checked_reference(reference: Any, source: str) -> dict:
    """A histogram reference (``{"path", "vendor", "counts"}``) with its 256 counts checked."""
    counts = reference.get("counts") if isinstance(reference, Mapping) else None
    values = np.asarray(counts if counts is not None else [], dtype=object).ravel()
    if (values.shape != (N_LEVELS,) or not all(isinstance(value, (int, np.integer)) and value >= 0 for value in values)
            or not any(values)):
        raise ValueError(f"{source}: not a histogram reference; expected the histogram_reference.json prepare_data.py "
                         f"writes ({{\"path\", \"vendor\", \"counts\": {N_LEVELS} counts >= 0}}), or a volume")
    return {"path": str(reference.get("path", source)), "vendor": str(reference.get("vendor", "Spectralis")),
            "counts": [int(value) for value in values]}


def load_reference(given: str | os.PathLike | Mapping | None, reference_setting: str, settings: PreprocessSettings,
                   data_root: str | Path) -> dict | None:
    """The histogram reference Cirrus and Topcon volumes are matched to.

    Args:
        given: a volume (a Spectralis ``oct.mhd``, as ``HISTOGRAM_REFERENCE``), the ``histogram_reference.json``
            prepare_data.py writes in its work dir, or that JSON's dict; None: ``reference_setting`` when set, else
            none.
        reference_setting: ``HISTOGRAM_REFERENCE``: a volume, absolute or relative to where Python runs or to
            ``data_root``, as prepare_data.py reads it; or ``""``.
        settings: how a volume is read (``vendor_files``) and which vendors are matched
            (``histogram_match_vendors``) (:class:`utils.prepare.preprocessing.PreprocessSettings`).
        data_root: ``DATA_ROOT``, the folder ``reference_setting`` may be relative to.

    Returns:
        ``{"path", "vendor", "counts"}`` (:func:`utils.prepare.preprocessing.histogram_reference`), or None.

    Raises:
        FileNotFoundError: no such file.
        ValueError, VolumeError: a file or dict that is not a histogram reference nor a readable volume.
    """
    if given is None:
        return load_histogram_reference([], reference_setting, settings, data_root)[1]
    if isinstance(given, Mapping):
        return _checked_reference(given, "histogram_reference")
    path = Path(given)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give histogram_reference= a Spectralis oct.mhd or the "
                                f"histogram_reference.json prepare_data.py wrote")
    if path.suffix.lower() == ".json":
        try:
            reference = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: not a readable JSON file ({error.__class__.__name__}: {error})") from None
        return _checked_reference(reference, str(path))
    return histogram_reference(path, settings.vendor_files)


class Preparer:
    """prepare_data.py's settings and histogram reference, loaded once, preparing any number of volumes as
    prepare_data.py prepares a case.

    Args:
        histogram_reference: what Cirrus and Topcon volumes are histogram matched to (:func:`load_reference`): the
            ``histogram_reference.json`` prepare_data.py recorded in its work dir (so volumes are prepared as that
            work dir's were), a Spectralis volume, or that JSON's dict; None: ``HISTOGRAM_REFERENCE`` when set, else
            none (then only vendors outside ``HISTOGRAM_MATCH_VENDORS`` can be prepared).
        **overrides: settings of config.py by name, as prepare_data.py's ``--set`` (e.g. ``MEDIAN_INPLANE=5``,
            ``ENTROPY_THRESHOLD=0.02``).

    Attributes:
        cfg: the effective config: config.py with the overrides, as prepare_data.py's ``--set`` makes it.
        settings: what the preprocess step reads of ``cfg``
            (:class:`utils.prepare.preprocessing.PreprocessSettings`), built once.
        roi_settings: what the roi step reads of ``cfg`` (:class:`utils.prepare.roi.RoiSettings`), built once.
        reference: the histogram reference, ``{"path", "vendor", "counts": 256 ints}``, or None.

    Raises:
        ConfigError: an unknown setting (the nearest name suggested) or a value of the wrong type or that cannot
            work.
        FileNotFoundError, ValueError, VolumeError: a histogram reference that cannot be read; the message names it.
    """

    def __init__(self, histogram_reference: str | os.PathLike | Mapping | None = None, **overrides: Any):
        self.cfg: types.SimpleNamespace = load_config(keyword_overrides(overrides))
        self.settings = PreprocessSettings.from_config(self.cfg)
        self.roi_settings = RoiSettings.from_config(self.cfg)
        self.reference = load_reference(histogram_reference, self.cfg.HISTOGRAM_REFERENCE, self.settings,
                                        self.cfg.DATA_ROOT)

    def prepare(self, volume: str | os.PathLike | np.ndarray, geometry: Geometry | None = None,
                vendor: str | None = None, labels: np.ndarray | None = None, name: str | None = None,
                with_roi: bool = True) -> PreparedVolume:
        """Prepares one volume as prepare_data.py's preprocess and roi steps prepare a case.

        Args:
            volume: a file prepare_data.py reads (an ``oct.mhd``, its labels from the ``reference.mhd`` beside it
                and its vendor from its folders or its type and size; a vendor file: ``.vol``, ``.e2e``, Heyex
                ``.xml``, ``.img``, ``.fds``/``.fda``, ``.dcm``), or a ``(z, y, x)`` = (B-scan, depth, width) array,
                uint8 (Cirrus, Topcon) or uint16 (Spectralis).
            geometry: the array's geometry (spacing ``(x, y, z)`` mm, as the slice index records it); only with
                an array.
            vendor: one of ``VENDORS``: which preprocessing the volume gets. Needed with an array; for a file, it
                replaces the vendor read from its path or header.
            labels: the array's ``(z, y, x)`` reference label codes (``BACKGROUND`` and the codes of ``FLUIDS``),
                its size; only with an array (a file's are its ``reference.mhd``). They set the slice index's fluid
                flags and join the ROI, as a reference does.
            name: the case name (default: the file's, as prepare_data.py names it; ``"volume"`` for an array).
            with_roi: also compute the ROI masks (a few hundred ms per full-size B-scan).

        Returns:
            :class:`PreparedVolume`; for an array, its slice index's ``oct_path`` is empty.

        Raises:
            FileNotFoundError: no such file.
            VolumeError, ValueError, OSError: a file that cannot be read, an array without geometry or vendor or of
                another shape or type, labels of another size or with other codes, a vendor not in ``VENDORS``, a
                histogram-matched vendor without a histogram reference; the message names the file or argument.
        """
        cfg, settings = self.cfg, self.settings
        if vendor is not None and vendor not in cfg.VENDORS:
            raise ValueError(f"vendor={vendor!r}: expected one of VENDORS: {', '.join(cfg.VENDORS)}")
        if isinstance(volume, (str, os.PathLike)):
            path = Path(volume)
            if geometry is not None or labels is not None:
                raise ValueError(f"{path}: a file holds its own geometry, and its labels are the {REFERENCE_FILE} "
                                 f"beside it; give geometry and labels only with an array")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file; give an oct.mhd or a vendor file (a folder of "
                                        f"cases: prepare_data.py)")
            case = file_case(path, cfg.VENDORS, vendor)
            name, vendor, source = name or case.name, case.vendor, str(case.oct_path)
            self._check_reference(vendor, source)
            raw, geometry, labels = read_case(case, settings)
        else:
            raw = np.asarray(volume)
            check_array_volume(raw, geometry, vendor, "prepare")
            name, source = name or "volume", ""
            self._check_reference(vendor, "array")
            if labels is not None:
                labels = check_reference_labels(np.asarray(labels), raw.shape, settings.label_codes, "labels")
        counts = np.asarray(self.reference["counts"]) if self.reference else None
        image = preprocess_volume(raw, vendor, counts, settings, source or "array")
        roi_settings = self.roi_settings
        roi = (volume_roi_masks(image, labels, roi_settings.entropy_disk_radius, roi_settings.entropy_threshold,
                                roi_settings.closing_disk_radius) if with_roi else None)
        rows = slice_rows(name, vendor, source, image.shape, geometry, labels, settings)
        return PreparedVolume(name, vendor, geometry, image, labels, roi, rows)

    def _check_reference(self, vendor: str, source: str | Path) -> None:
        """Refuses, before any reading, a volume that needs histogram matching when there is no reference."""
        if vendor in self.cfg.HISTOGRAM_MATCH_VENDORS and self.reference is None:
            raise ValueError(f"{source}: {vendor} volumes are histogram matched (HISTOGRAM_MATCH_VENDORS), but this "
                             f"Preparer has no histogram reference; give Preparer(histogram_reference=...) the "
                             f"histogram_reference.json prepare_data.py wrote, or a Spectralis oct.mhd")
