"""Segmenting cases: one case read and preprocessed (:func:`load_case`; a volume read elsewhere:
:func:`prepare_volume`), segmented (:func:`segment_volume`) and written (:func:`predict_case`), and a rank's share
of the cases with the next one read ahead (:func:`segment_cases`); under torchrun, the ranks' totals
(:func:`gather_counts`). predict.py and :class:`utils.predict.predictor.Predictor` segment through the same
functions, so their labels agree."""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from utils.io.cases import Case
from utils.io.files import error_line
from utils.io.mhd_io import Geometry, read_volume
from utils.io.parallel import CASE_ERRORS
from utils.io.tables import presence_column, volume_column, volumes_case_cells
from utils.io.vendor_files import VendorFileSettings, read_oct_volume
from utils.model.runtime import Runtime
from utils.predict import band, etdrs, inference, postprocess, report
from utils.predict.markers import finished_result, remove_marker, write_marker
from utils.predict.outputs import OVERLAY_FOLDER, Outputs, segmentation_path, write_overlays, write_volumes
from utils.predict.settings import PredictSettings
from utils.prepare.preprocessing import histogram_reference, preprocess_volume


def model_histogram_reference(checkpoint: dict, given: str | Path = "",
                              vendor_files: VendorFileSettings = VendorFileSettings(),
                              cases: Sequence[Case] = ()) -> tuple[dict | None, bool, list[str]]:
    """The histogram reference predict.py matches Cirrus and Topcon volumes to (``{"path", "counts", "vendor"}``):
    the checkpoint's; for a checkpoint made without one (trained on cases none of which needed matching, before
    prepare_data.py recorded it always), the volume ``given`` names (``--set HISTOGRAM_REFERENCE=FILE``), read here.

    Args:
        checkpoint: a loaded checkpoint.
        given: the volume this command's ``--set HISTOGRAM_REFERENCE`` names (a path, relative to where the command
            runs), or empty when it names none.
        vendor_files: how that volume's file is read (:class:`utils.io.vendor_files.VendorFileSettings`).
        cases: the cases to segment (a note when Spectralis ones meet a reference of another vendor).

    Returns:
        ``(reference, supplied, notes)``: the reference or None, whether ``given`` supplied it, and notes to print.

    Raises:
        FileNotFoundError, ValueError: the supplied file cannot be read as a volume; the message names it.
    """
    reference, notes, supplied = checkpoint.get("histogram_reference"), [], False
    given = str(given or "")
    if reference and given and Path(given).resolve() != Path(reference.get("path", "")).resolve():
        notes.append(f"--set HISTOGRAM_REFERENCE={given} ignored: the checkpoint holds the histogram reference it "
                     f"was trained with ({reference.get('path')})")
    elif not reference and given:
        if not Path(given).is_file():
            raise FileNotFoundError(f"{given}: HISTOGRAM_REFERENCE names no file")
        reference, supplied = histogram_reference(given, vendor_files), True
    vendor = (reference or {}).get("vendor", "Spectralis")  # checkpoints before the vendor was recorded: Spectralis
    if vendor != "Spectralis" and any(case.vendor == "Spectralis" for case in cases):
        notes.append(f"the model's histogram reference is a {vendor} volume ({reference.get('path')}; it was "
                     f"trained without Spectralis scans): Spectralis volumes reach it on another intensity scale "
                     f"than its training scans")
    return reference, supplied, notes


def reference_counts(reference: dict | None) -> np.ndarray | None:
    """The counts of a histogram reference (:func:`model_histogram_reference`), or None."""
    return np.asarray(reference["counts"]) if reference else None


@dataclasses.dataclass(frozen=True)
class LoadedCase:
    """A case read and preprocessed, ready for the network.

    Attributes:
        geometry: the volume's geometry (spacing ``(x, y, z)`` mm, origin, direction).
        prepared: ``(z, y, x)`` uint8 0..255, the preprocessed volume.
        laterality: ``"R"``, ``"L"`` (vendor files) or ``""`` (unknown).
        rois: ``(z, y, x)`` bool ROI of each B-scan where ``PREDICT_REGION`` needs it, else None.
    """

    geometry: Geometry
    prepared: np.ndarray
    laterality: str = ""
    rois: np.ndarray | None = None


def check_reference(vendor: str, reference_counts: np.ndarray | None, histogram_match_vendors: Sequence[str],
                    source: str | Path) -> None:
    """Raises ValueError naming ``source`` when ``vendor``'s volumes are histogram matched (one of
    ``histogram_match_vendors``: ``HISTOGRAM_MATCH_VENDORS``) and there is no reference to match them to."""
    if vendor in histogram_match_vendors and reference_counts is None:
        raise ValueError(f"{source}: {vendor} volumes are histogram matched, but the checkpoint holds "
                         f"no histogram reference; give one with --set HISTOGRAM_REFERENCE=FILE (a Spectralis "
                         f"oct.mhd, ideally one of the model's training scans)")


def prepare_volume(volume: np.ndarray, geometry: Geometry, vendor: str, settings: PredictSettings,
                   reference_counts: np.ndarray | None, source: str = "volume", laterality: str = "",
                   with_rois: bool = True) -> LoadedCase:
    """A volume read elsewhere made ready for the network, as :func:`load_case` makes a case's.

    Args:
        volume: ``(z, y, x)`` raw OCT, uint8 (Cirrus, Topcon) or uint16 (Spectralis).
        geometry: its geometry (spacing ``(x, y, z)`` mm).
        vendor: one of ``VENDORS``: which preprocessing it gets.
        settings: the run's settings (``preprocess``; ``inference`` for the ROIs).
        reference_counts: ``(256,)`` histogram reference, needed for ``HISTOGRAM_MATCH_VENDORS``.
        source: names the volume in error messages.
        laterality: ``"R"``, ``"L"`` or ``""`` (unknown).
        with_rois: compute the B-scans' ROIs where ``PREDICT_REGION`` needs them.

    Raises:
        ValueError: a dtype other than uint8/uint16, or a histogram-matched vendor without a reference; the message
            names ``source``.
    """
    check_reference(vendor, reference_counts, settings.preprocess.histogram_match_vendors, source)
    prepared = preprocess_volume(volume, vendor, reference_counts, settings.preprocess, source)
    rois = band.volume_rois(prepared, settings.inference) if with_rois else None
    return LoadedCase(geometry, prepared, laterality, rois)


def load_case(case: Case, settings: PredictSettings, reference_counts: np.ndarray | None,
              with_rois: bool = True) -> LoadedCase:
    """Reads and preprocesses one case and computes its B-scans' ROIs where the test-time region needs them: all
    the work before the network, so that :func:`segment_cases` can do it for the next case in the background.
    ``with_rois=False`` leaves the ROIs out (drawing figures of a case segmented before needs none).

    Args:
        case: the case (its ``oct_path`` and ``vendor``).
        settings, reference_counts: as :func:`prepare_volume` (``settings.preprocess.vendor_files`` reads the file).
        with_rois: compute the B-scans' ROIs where ``PREDICT_REGION`` needs them.

    Raises:
        VolumeError, ValueError, OSError: unreadable volume or unusable data; the message names the file.
    """
    check_reference(case.vendor, reference_counts, settings.preprocess.histogram_match_vendors,
                    case.oct_path)  # before reading a volume in vain
    volume, geometry, laterality = read_oct_volume(case.oct_path, settings.preprocess.vendor_files)
    return prepare_volume(volume, geometry, case.vendor, settings, reference_counts, str(case.oct_path), laterality,
                          with_rois)


def segment_volume(model: torch.nn.Module, loaded: LoadedCase, settings: PredictSettings, runtime: Runtime,
                   keep_probabilities: bool = False,
                   on_batch: Callable[[int], Any] | None = None) -> inference.VolumePrediction:
    """The labels of a loaded volume as predict.py writes them: :func:`utils.predict.inference.predict_volume` in
    batches of ``INFERENCE_BATCH_SIZE``, then ``PRESENCE_GATE``, ``FLUID_CLOSING_MM`` and ``MIN_COMPONENT_MM3``
    (:mod:`utils.predict.postprocess`).

    Args:
        model: the network (or ensemble) in eval mode on ``runtime.device``.
        loaded: the volume from :func:`load_case` or :func:`prepare_volume`.
        settings: the run's settings (``inference``, ``inference_batch_size``, ``presence_gate``,
            ``fluid_closing_mm``, ``min_component_mm3``).
        runtime: device, autocast and memory layout.
        keep_probabilities: also keep each fluid's uint8-scaled probability volume.
        on_batch: called with the number of B-scans after each batch (a progress bar's ``update``).

    Returns:
        The :class:`utils.predict.inference.VolumePrediction` with its labels post-processed: ``(z, y, x)`` uint8
        codes 0..C-1; presence scores and probabilities as the network gave them (before the post-processing).
    """
    result = inference.predict_volume(model, loaded.prepared, loaded.geometry, settings.inference, runtime,
                                      settings.inference_batch_size, on_batch=on_batch,
                                      keep_probabilities=keep_probabilities, rois=loaded.rois)
    labels = postprocess.gate_absent_fluids(result.labels, result.presence, settings.fluids, settings.presence_gate)
    labels = postprocess.close_fluids(labels, settings.fluids, loaded.geometry.spacing_mm, settings.fluid_closing_mm)
    labels = postprocess.remove_small_components(labels, settings.fluids, loaded.geometry.voxel_volume_mm3,
                                                 settings.min_component_mm3)
    return dataclasses.replace(result, labels=labels)


def predict_case(case: Case, model: torch.nn.Module, settings: PredictSettings, runtime: Runtime,
                 loaded: LoadedCase, case_dir: Path, identity: dict, outputs: Outputs = Outputs()) -> dict:
    """Segments one case loaded by :func:`load_case` and writes its outputs (segmentation, probabilities,
    overlays, report, marker last) into ``case_dir``.

    Args:
        case: the case.
        model, settings, runtime: as :func:`segment_volume` (``settings`` also names the files and sets the ETDRS
            grid).
        loaded: the case from :func:`load_case`.
        case_dir: ``OUT/<case>``.
        identity: the run's identity (:func:`utils.predict.markers.ensemble_identity`), recorded in the marker.
        outputs: what is written besides the labels and the marker.

    Returns:
        Its ``volumes.csv`` row (columns :func:`utils.predict.tables.volumes_columns`).

    Raises:
        VolumeError, ValueError, OSError: unusable data or outputs that cannot be written; the message names the
            file.
    """
    geometry, prepared = loaded.geometry, loaded.prepared
    remove_marker(case_dir)  # an old marker must not vouch for half-replaced outputs
    with tqdm(total=prepared.shape[0], desc=case.name, unit="B-scan", leave=False) as bar:
        result = segment_volume(model, loaded, settings, runtime, outputs.probabilities, bar.update)
    labels = result.labels
    write_volumes(case_dir, settings, outputs, labels, result.probabilities, geometry)
    fluids = settings.fluids
    if outputs.overlays is not None:
        write_overlays(case_dir / OVERLAY_FOLDER, case.name, prepared, labels, outputs.overlays, fluids,
                       settings.preprocess.png_compress_level)
    volumes = inference.fluid_volumes_mm3(labels, geometry, fluids)
    row = {**volumes_case_cells(case.name, case.vendor, int(prepared.shape[0])),
           **{volume_column(fluid): volumes[fluid] for fluid in fluids},
           **{presence_column(fluid): result.presence[fluid] for fluid in fluids},
           **etdrs.etdrs_row(prepared, labels, geometry, fluids, settings.etdrs_diameters_mm,
                              settings.fovea_search_radius_mm, settings.fovea_min_depth_mm, loaded.laterality)}
    if outputs.report:
        report.draw_report(case_dir / settings.report_png, case.name, prepared, labels, geometry, row, fluids,
                           settings.etdrs_diameters_mm)
    write_marker(case_dir, identity, case, row)
    return row


def redraw_figures(case: Case, case_dir: Path, settings: PredictSettings, reference_counts: np.ndarray | None,
                   outputs: Outputs, row: dict) -> None:
    """Overlays and report of a case segmented before, from its saved labels and ``volumes.csv`` row (no network
    needed); nothing when ``outputs`` asks for neither."""
    if outputs.overlays is None and not outputs.report:
        return
    labels, geometry = read_volume(segmentation_path(case_dir, settings.segmentation_file, outputs.format))
    prepared = load_case(case, settings, reference_counts, with_rois=False).prepared
    if outputs.overlays is not None:
        write_overlays(case_dir / OVERLAY_FOLDER, case.name, prepared, labels, outputs.overlays, settings.fluids,
                       settings.preprocess.png_compress_level)
    if outputs.report:
        report.draw_report(case_dir / settings.report_png, case.name, prepared, labels, geometry, row,
                           settings.fluids, settings.etdrs_diameters_mm)


def segment_cases(cases: list[Case], model: torch.nn.Module, settings: PredictSettings, runtime: Runtime,
                  reference_counts: np.ndarray | None, out_dir: Path, identity: dict, outputs: Outputs = Outputs(),
                  ) -> tuple[int, int, list[str]]:
    """:func:`predict_case` for every case not done before; one line per case, one per failure (stderr).

    The next case is read, preprocessed and its ROIs computed in a background thread while the network segments
    the current one (reading, histogram matching, the medians and the ROI's filters release the GIL for the most
    part), so the network rarely waits for data.

    Returns:
        ``(cases segmented, cases skipped, oct.mhd paths of the cases that failed)``.
    """
    segmented, skipped, failed, todo = 0, 0, [], []
    for number, case in enumerate(cases, 1):
        try:
            done = finished_result(case, out_dir / case.name, identity, settings, outputs)
            if done is None:
                todo.append((number, case))
                continue
            skipped += 1
            print(f"[{number}/{len(cases)}] {case.name}: done before with this checkpoint, skipped")
            redraw_figures(case, out_dir / case.name, settings, reference_counts, outputs, done)
        except CASE_ERRORS as error:
            print(f"error: {_with_file(error_line(error), case)}", file=sys.stderr)
            failed.append(str(case.oct_path))
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(load_case, todo[0][1], settings, reference_counts) if todo else None
        for index, (number, case) in enumerate(todo):
            start = time.perf_counter()
            loading, pending = pending, None
            if index + 1 < len(todo):
                pending = reader.submit(load_case, todo[index + 1][1], settings, reference_counts)
            try:
                row = predict_case(case, model, settings, runtime, loading.result(), out_dir / case.name,
                                   identity, outputs)
            except CASE_ERRORS as error:
                print(f"error: {_with_file(error_line(error), case)}", file=sys.stderr)
                failed.append(str(case.oct_path))
                continue
            segmented += 1
            volumes = " ".join(f"{fluid} {row[volume_column(fluid)]:.3f}" for fluid in settings.fluids)
            print(f"[{number}/{len(cases)}] {case.name} ({case.vendor}, {row['n_bscans']} B-scans): {volumes} mm³ "
                  f"({time.perf_counter() - start:.1f} s)")
    return segmented, skipped, failed


def gather_counts(counts: tuple[int, int, list[str]], runtime: Runtime) -> tuple[int, int, list[str]]:
    """This rank's ``(segmented, skipped, failed)``, or under torchrun the totals of all ranks (after all are
    done)."""
    if not runtime.distributed:
        return counts
    every = [None] * runtime.world_size
    dist.all_gather_object(every, counts)
    return (sum(c[0] for c in every), sum(c[1] for c in every), [path for c in every for path in c[2]])


def _with_file(message: str, case: Case) -> str:
    return message if str(case.oct_path) in message else f"{case.oct_path}: {message}"
