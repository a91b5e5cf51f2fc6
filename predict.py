"""Segments OCT volumes with a trained U-Net: label volumes, fluid volumes and presence scores.

    python predict.py [--checkpoint FILE] [--out DIR] [--format mhd|mha|nii.gz] [--save-probabilities]
                      [--overlays [N|all]] [--report] [--set NAME=VALUE ...] INPUT...

INPUT: ``oct.mhd`` files, or folders searched for them at any depth (the RETOUCH layout; see utils/cases.py), or
the devices' own files: Heidelberg ``.vol``/``.e2e``, Zeiss Cirrus ``.img``, Topcon ``.fds``/``.fda``, OCT DICOM
``.dcm`` (utils/io/vendor_files.py: vendor and spacing from the file; ``CIRRUS_IMG_SPACING_MM`` and
``E2E_SPACING_XZ_MM`` supply what those files lack). A case is named after the folder of its ``oct.mhd``, or after
a vendor file's name without its suffix. Default checkpoint: ``best.pt`` of the most recent run under
``WORK_DIR/runs``; default ``--out``: ``WORK_DIR/predictions/<run name>``. Nothing is written next to the inputs.

Each volume gets exactly the preprocessing and depth resolution the model was trained with: the settings come from
the checkpoint; ``--set`` changes only those about this machine and inference (``LOCAL_SETTINGS``), and any
other override that differs from the checkpoint is ignored with a note.
Writes, per case, ``OUT/<case>/segmentation.mhd`` (+ ``.raw``: uint8 labels 0..3 with the input's size, spacing,
origin and direction; ``--format mha`` or ``nii.gz`` writes ``segmentation.mha`` / ``segmentation.nii.gz``
instead), with ``--save-probabilities`` ``OUT/<case>/probability_<fluid>.mhd`` (each fluid's softmax probability as
uint8 ``round(255 p)``, same geometry and format), with ``--overlays`` PNGs of some or all B-scans under
``OUT/<case>/overlays/``, with ``--report`` ``OUT/<case>/report.png`` (utils/predict/report.py), and last
``OUT/<case>/prediction.json`` (checkpoint, settings and results; a rerun skips a case whose marker matches and
whose requested files exist); then ``OUT/volumes.csv`` (one row per case in OUT made with this checkpoint: volumes,
presence scores, and volumes per ETDRS subfield, see utils/predict/etdrs.py), the label names and colours for
ITK-SNAP (``labels_itksnap.txt``) and 3D Slicer (``labels_slicer.ctbl``), with ``--report`` ``OUT/report.html`` (an
index of the case reports that opens from disk), and ``OUT/config.json``. Presence scores are defined in
utils/predict/inference.py.

Exit status 1 when a case failed (the others are still segmented) or there was nothing to do, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
import types
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from PIL import Image
from tqdm import tqdm

from utils.predict import etdrs, inference, label_tables, postprocess, report
from utils.io.cases import OCT_FILE, Case, detect_vendor, find_cases
from utils.configuration import (ConfigError, add_config_arguments, config_from_dict,
                                 load_config, save_config)
from utils.io.files import atomic_path, atomic_write_csv, atomic_write_text, error_line, remove_stale_temporaries
from utils.io.outputs import check_outputs
from utils.io.mhd_io import (VOLUME_FORMATS, Geometry, read_volume, remove_volume, volume_files, with_format,
                             write_volume)
from utils.model.checkpoints import latest_checkpoint, load_checkpoint, model_from_checkpoint
from utils.io.parallel import CASE_ERRORS
from utils.io.vendor_files import VENDOR_SUFFIXES, is_vendor_file, read_oct_volume, vendor_file_vendor
from utils.prepare.preprocessing import preprocess_volume
from utils.model.runtime import Runtime, select_runtime

MARKER_FILE = "prediction.json"  # OUT/<case>/<this>: written last, marks the case complete
OVERLAY_FOLDER = "overlays"  # OUT/<case>/<this>/<case>_<zzz>.png
DEFAULT_OVERLAYS = 5  # B-scans drawn by a bare --overlays

# Settings that describe this machine or how inference runs, not the model: taken from config.py and --set. All
# others come from the checkpoint, so the volumes are preprocessed and scaled exactly as in training.
INFERENCE_SETTINGS = ("PREDICT_REGION", "TTA_FLIP", "PRESENCE_GATE", "MIN_COMPONENT_MM3", "INFERENCE_BATCH_SIZE",
                      "INFERENCE_TILE_SHAPE", "INFERENCE_TILE_OVERLAP", "PRESENCE_MIN_VOLUME_MM3",
                      "ETDRS_DIAMETERS_MM", "FOVEA_SEARCH_RADIUS_MM", "FOVEA_MIN_DEPTH_MM")
# The vendor-file settings say how to read an input, not how the model was trained.
VENDOR_FILE_SETTINGS = ("CIRRUS_IMG_SHAPE", "CIRRUS_IMG_SPACING_MM", "TOPCON_SPACING_MM", "E2E_SPACING_XZ_MM")
LOCAL_SETTINGS = ("WORK_DIR", "RUNS_SUBDIR", "PREDICTIONS_SUBDIR", "DEVICE", "MIXED_PRECISION",
                  "CHANNELS_LAST") + INFERENCE_SETTINGS + VENDOR_FILE_SETTINGS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, metavar="INPUT",
                        help="oct.mhd files, folders searched for them at any depth, or vendor files ("
                             + " ".join(VENDOR_SUFFIXES) + ")")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="model checkpoint (default: best.pt of the most recent run under WORK_DIR/runs)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: WORK_DIR/predictions/<run name>)")
    parser.add_argument("--overlays", nargs="?", const=str(DEFAULT_OVERLAYS), default=None, metavar="N|all",
                        help=f"also write PNGs of N evenly spread B-scans (bare: {DEFAULT_OVERLAYS}) or of all, "
                             f"fluids coloured over the grey B-scan")
    parser.add_argument("--format", choices=VOLUME_FORMATS, default=VOLUME_FORMATS[0],
                        help="file format of the segmentations and probability volumes (default: mhd + raw, as "
                             "RETOUCH)")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="also write each fluid's probability volume, uint8 = round(255 x probability)")
    parser.add_argument("--report", action="store_true",
                        help="also draw a report.png per case (thickness maps, volume per B-scan, the B-scans with "
                             "most fluid) and an index report.html")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    if args.overlays is not None:
        if args.overlays == "all":
            args.overlays = 0  # 0: every B-scan
        elif not (args.overlays.isdigit() and int(args.overlays) > 0):
            parser.error(f"--overlays {args.overlays}: expected a number of B-scans >= 1 or 'all'")
        else:
            args.overlays = int(args.overlays)
    try:
        args.local_cfg = load_config(args.overrides)
    except ConfigError as error:
        parser.error(str(error))
    args.set_names = [item.partition("=")[0].strip() for item in args.overrides]
    return args


# --------------------------------------------------------------------------------------------------------------
# Checkpoint, config, cases
# --------------------------------------------------------------------------------------------------------------
def inference_config(checkpoint: dict, local_cfg, set_names: list[str] = ()) -> tuple[types.SimpleNamespace,
                                                                                        list[str]]:
    """The effective config: the checkpoint's settings, with ``LOCAL_SETTINGS`` from ``local_cfg`` on top.

    Args:
        checkpoint: a loaded checkpoint (its ``config``).
        local_cfg: config.py with this command's ``--set`` overrides.
        set_names: the names this command's ``--set`` overrides.

    Returns:
        ``(cfg, notes)``: one note per overridden setting that is not local and differs from the checkpoint's
        (ignored: the model is used with the settings it was trained with).
    """
    settings = vars(config_from_dict(checkpoint.get("config") or {}))
    notes = [f"--set {name}={getattr(local_cfg, name)!r} ignored: predict.py uses the model's own settings "
             f"({name}={settings[name]!r} in the checkpoint); only {', '.join(LOCAL_SETTINGS)} can be set"
             for name in dict.fromkeys(set_names)
             if name not in LOCAL_SETTINGS and getattr(local_cfg, name) != settings.get(name)]
    settings.update({name: getattr(local_cfg, name) for name in LOCAL_SETTINGS})
    return load_config([], base=settings), notes


def collect_cases(inputs: list[Path], vendors) -> tuple[list[Case], list[str]]:
    """The cases named by the command line: ``.mhd`` files, vendor files (named by their stem), and every
    ``oct.mhd`` below folders.

    Returns:
        ``(cases, errors)``: cases with distinct names (the same file named twice counts once), and one line per
        input that cannot be used (missing, not a MetaImage header or vendor file, unknown vendor, a case name
        already taken).
    """
    cases: list[Case] = []
    errors: list[str] = []
    for path in inputs:
        if path.is_dir():
            found, problems = find_cases(path, vendors)
            cases += found
            errors += problems
            if not found and not problems:
                errors.append(f"{path}: no {OCT_FILE} below this folder")
        elif path.is_file() and is_vendor_file(path):
            try:
                cases.append(Case(path.stem, vendor_file_vendor(path, vendors), path, None))
            except CASE_ERRORS as error:
                errors.append(str(error))
        elif path.is_file():
            if path.suffix.lower() != ".mhd":
                errors.append(f"{path}: not a MetaImage header (.mhd) nor a vendor file "
                              f"({' '.join(VENDOR_SUFFIXES)}); give oct.mhd files, vendor files or folders")
                continue
            try:
                cases.append(Case(path.resolve().parent.name, detect_vendor(path, vendors), path, None))
            except CASE_ERRORS as error:
                errors.append(str(error))
        else:
            errors.append(f"{path}: no such file or folder")
    unique: dict[str, Case] = {}
    for case in cases:
        other = unique.get(case.name)
        if other is None:
            unique[case.name] = case
        elif other.oct_path.resolve() != case.oct_path.resolve():
            errors.append(f"{case.oct_path}: case name {case.name} is taken by {other.oct_path}; segment it in a "
                          f"separate run with another --out")
    return list(unique.values()), errors


def check_out_dir(out_dir: Path, cases: list[Case], inputs: list[Path], cfg, checkpoint_path: Path) -> None:
    """Refuses an output folder in (or below) the data or an input, onto the checkpoint, or one that holds
    another program's ``config.json``/``volumes.csv`` (a training run, an evaluation, someone's notes).

    Raises:
        ConfigError: naming the folder and what it would overwrite.
    """
    roots = [("input folder" if path.is_dir() else "folder of the input", path if path.is_dir() else path.parent)
             for path in inputs if path.exists()]
    roots += [("folder of the input", case.oct_path.parent) for case in cases]
    roots += [("data root", cfg.DATA_ROOT), ("prepared slices folder", Path(cfg.WORK_DIR) / cfg.SLICES_SUBDIR)]
    check_outputs([("--out", out_dir)], roots, [("--checkpoint", checkpoint_path),
                                               ("--checkpoint's run folder", checkpoint_path.parent)])
    resolved = out_dir.resolve()
    for case in cases:
        if (resolved / case.name) == case.oct_path.resolve().parent:
            raise ConfigError(f"{out_dir}: --out would write into the input's folder {case.oct_path.parent}; "
                              f"choose a folder outside the data")
    ours = (any(out_dir.glob(f"*/{MARKER_FILE}"))
            or _csv_header(out_dir / cfg.VOLUMES_CSV) == volumes_columns(cfg.FLUIDS))
    foreign = [name for name in (cfg.CONFIG_JSON, cfg.VOLUMES_CSV) if (out_dir / name).exists()]
    if foreign and not ours:
        raise ConfigError(f"{out_dir}: --out holds a {' and a '.join(foreign)} that predict.py did not write (no "
                          f"<case>/{MARKER_FILE} beside it); choose an empty or new folder")


def _csv_header(path: Path) -> list[str] | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.readline().strip().split(",")
    except (OSError, UnicodeDecodeError):
        return None


def check_inference_settings(cfg, multiple: int) -> None:
    """Raises ValueError naming the first inference setting of ``cfg`` that cannot work."""
    inference.check_tiling(tuple(cfg.INFERENCE_TILE_SHAPE), cfg.INFERENCE_TILE_OVERLAP, multiple)
    if cfg.INFERENCE_BATCH_SIZE < 1:
        raise ValueError(f"INFERENCE_BATCH_SIZE must be >= 1, got {cfg.INFERENCE_BATCH_SIZE}")
    if cfg.PRESENCE_MIN_VOLUME_MM3 < 0:
        raise ValueError(f"PRESENCE_MIN_VOLUME_MM3 must be >= 0 mm³, got {cfg.PRESENCE_MIN_VOLUME_MM3}")


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


def _complete(path: Path) -> bool:
    return all(file.is_file() for file in volume_files(path))


def run_identity(checkpoint_path: Path, checkpoint: dict, cfg) -> dict:
    """What a case's outputs depend on besides its volume: a rerun redoes a case whose marker says otherwise."""
    return {"checkpoint": str(checkpoint_path.resolve()), "epoch": checkpoint.get("epoch"),
            "settings": {name: getattr(cfg, name) for name in INFERENCE_SETTINGS if name != "INFERENCE_BATCH_SIZE"}}


def _read_marker(case_dir: Path) -> dict | None:
    try:
        return json.loads((case_dir / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _marker_matches(marker: dict | None, identity: dict) -> bool:
    # through JSON, so tuples and lists compare equal
    expected = json.loads(json.dumps(identity))
    return marker is not None and all(marker.get(key) == value for key, value in expected.items())


def finished_result(case: Case, case_dir: Path, identity: dict, cfg, outputs: Outputs = Outputs()) -> dict | None:
    """The saved volumes.csv row of a case already segmented from the same volume with this identity, whose
    segmentation (and, when ``outputs`` asks for them, probability volumes) exist in ``outputs.format``; else None."""
    marker = _read_marker(case_dir)
    wanted = [segmentation_path(case_dir, cfg, outputs.format)]
    if outputs.probabilities:
        wanted += probability_paths(case_dir, cfg, outputs.format).values()
    if not (_marker_matches(marker, identity) and marker.get("oct_path") == str(case.oct_path.resolve())
            and all(_complete(path) for path in wanted)):
        return None
    return marker.get("result")


# --------------------------------------------------------------------------------------------------------------
# One case
# --------------------------------------------------------------------------------------------------------------
def write_overlays(folder: Path, case_name: str, volume: np.ndarray, labels: np.ndarray, count: int, cfg) -> None:
    """PNGs of ``count`` evenly spread B-scans (0: all): the preprocessed B-scan in grey, fluids in colour."""
    for z in inference.overlay_indices(volume.shape[0], count or None):
        rgb = inference.overlay_bscan(volume[z], labels[z], cfg.FLUIDS)
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


def load_case(case: Case, cfg, reference_counts: np.ndarray | None) -> tuple[int, Geometry, np.ndarray]:
    """Reads and preprocesses one case (no network): ``(B-scans, geometry, (z, y, x) uint8 preprocessed volume)``.

    Raises:
        VolumeError, ValueError, OSError: unreadable volume or unusable data; the message names the file.
    """
    if case.vendor in cfg.HISTOGRAM_MATCH_VENDORS and reference_counts is None:
        raise ValueError(f"{case.oct_path}: {case.vendor} volumes are histogram matched, but the checkpoint holds "
                         f"no histogram reference")
    volume, geometry = read_oct_volume(case.oct_path, cfg)
    return volume.shape[0], geometry, preprocess_volume(volume, case.vendor, reference_counts, cfg,
                                                        str(case.oct_path))


def predict_case(case: Case, model: torch.nn.Module, cfg, runtime: Runtime,
                 loaded: tuple[int, Geometry, np.ndarray],
                 case_dir: Path, identity: dict, outputs: Outputs = Outputs()) -> dict:
    """Segments one case loaded by :func:`load_case` and writes its outputs (segmentation, probabilities,
    overlays, marker last).

    Returns:
        Its ``volumes.csv`` row (columns :func:`volumes_columns`).

    Raises:
        VolumeError, ValueError, OSError: unusable data or outputs that cannot be written; the message names the
            file.
    """
    n_bscans, geometry, prepared = loaded
    (case_dir / MARKER_FILE).unlink(missing_ok=True)  # an old marker must not vouch for half-replaced outputs
    with tqdm(total=prepared.shape[0], desc=case.name, unit="B-scan", leave=False) as bar:
        result = inference.predict_volume(model, prepared, geometry, cfg, runtime, cfg.INFERENCE_BATCH_SIZE,
                                          on_batch=bar.update, keep_probabilities=outputs.probabilities)
    labels = postprocess.gate_absent_fluids(result.labels, result.presence, cfg.FLUIDS, cfg.PRESENCE_GATE)
    labels = postprocess.remove_small_components(labels, cfg.FLUIDS, geometry.voxel_volume_mm3,
                                                 cfg.MIN_COMPONENT_MM3)
    write_volumes(case_dir, cfg, outputs, labels, result.probabilities, geometry)
    if outputs.overlays is not None:
        write_overlays(case_dir / OVERLAY_FOLDER, case.name, prepared, labels, outputs.overlays, cfg)
    volumes = inference.fluid_volumes_mm3(labels, geometry, cfg.FLUIDS)
    row = {"case": case.name, "vendor": case.vendor, "n_bscans": int(n_bscans),
           **{f"{fluid}_volume_mm3": volumes[fluid] for fluid in cfg.FLUIDS},
           **{f"{fluid}_presence": result.presence[fluid] for fluid in cfg.FLUIDS},
           **etdrs.etdrs_row(prepared, labels, geometry, cfg)}
    if outputs.report:
        report.draw_report(case_dir / cfg.REPORT_PNG, case.name, prepared, labels, geometry, row, cfg)
    marker = {**identity, "oct_path": str(case.oct_path.resolve()), "result": row}
    atomic_write_text(case_dir / MARKER_FILE, json.dumps(marker, indent=2) + "\n")
    return row


def redraw_figures(case: Case, case_dir: Path, cfg, reference_counts: np.ndarray | None, outputs: Outputs,
                   row: dict) -> None:
    """Overlays and report of a case segmented before, from its saved labels and ``volumes.csv`` row (no network
    needed); nothing when ``outputs`` asks for neither."""
    if outputs.overlays is None and not outputs.report:
        return
    labels, geometry = read_volume(segmentation_path(case_dir, cfg, outputs.format))
    volume, _ = read_oct_volume(case.oct_path, cfg)
    prepared = preprocess_volume(volume, case.vendor, reference_counts, cfg, str(case.oct_path))
    if outputs.overlays is not None:
        write_overlays(case_dir / OVERLAY_FOLDER, case.name, prepared, labels, outputs.overlays, cfg)
    if outputs.report:
        report.draw_report(case_dir / cfg.REPORT_PNG, case.name, prepared, labels, geometry, row, cfg)


def segment_cases(cases: list[Case], model: torch.nn.Module, cfg, runtime: Runtime,
                  reference_counts: np.ndarray | None, out_dir: Path, identity: dict, outputs: Outputs = Outputs(),
                  ) -> tuple[int, int, list[str]]:
    """:func:`predict_case` for every case not done before; one line per case, one per failure (stderr).

    The next case is read and preprocessed in a background thread while the network segments the current one
    (reading, histogram matching and the medians release the GIL), so the network rarely waits for data.

    Returns:
        ``(cases segmented, cases skipped, oct.mhd paths of the cases that failed)``.
    """
    segmented, skipped, failed, todo = 0, 0, [], []
    for number, case in enumerate(cases, 1):
        try:
            done = finished_result(case, out_dir / case.name, identity, cfg, outputs)
            if done is None:
                todo.append((number, case))
                continue
            skipped += 1
            print(f"[{number}/{len(cases)}] {case.name}: done before with this checkpoint, skipped")
            redraw_figures(case, out_dir / case.name, cfg, reference_counts, outputs, done)
        except CASE_ERRORS as error:
            print(f"error: {_with_file(error_line(error), case)}", file=sys.stderr)
            failed.append(str(case.oct_path))
    with ThreadPoolExecutor(max_workers=1) as reader:
        pending = reader.submit(load_case, todo[0][1], cfg, reference_counts) if todo else None
        for index, (number, case) in enumerate(todo):
            start = time.perf_counter()
            loading, pending = pending, None
            if index + 1 < len(todo):
                pending = reader.submit(load_case, todo[index + 1][1], cfg, reference_counts)
            try:
                row = predict_case(case, model, cfg, runtime, loading.result(), out_dir / case.name, identity,
                                   outputs)
            except CASE_ERRORS as error:
                print(f"error: {_with_file(error_line(error), case)}", file=sys.stderr)
                failed.append(str(case.oct_path))
                continue
            segmented += 1
            volumes = " ".join(f"{fluid} {row[f'{fluid}_volume_mm3']:.3f}" for fluid in cfg.FLUIDS)
            print(f"[{number}/{len(cases)}] {case.name} ({case.vendor}, {row['n_bscans']} B-scans): {volumes} mm³ "
                  f"({time.perf_counter() - start:.1f} s)")
    return segmented, skipped, failed


def volumes_columns(fluids) -> list[str]:
    """The columns of ``volumes.csv``: case, vendor, n_bscans, then ``<fluid>_volume_mm3`` and ``<fluid>_presence``
    for each fluid of ``FLUIDS``, then the ETDRS grid's (:func:`utils.predict.etdrs.etdrs_columns`: where the
    fovea is and how it was found, and ``<fluid>_<subfield>_mm3``)."""
    return (["case", "vendor", "n_bscans"] + [f"{fluid}_volume_mm3" for fluid in fluids]
            + [f"{fluid}_presence" for fluid in fluids] + etdrs.etdrs_columns(list(fluids)))


def volumes_table(out_dir: Path, identity: dict, fluids) -> tuple[pd.DataFrame, list[str]]:
    """The ``volumes.csv`` rows of every case folder in ``out_dir`` whose marker matches ``identity``.

    Returns:
        ``(table sorted by case, names of case folders left out because another checkpoint or setting made them)``.
    """
    rows, others = [], []
    for marker_path in sorted(Path(out_dir).glob(f"*/{MARKER_FILE}")):
        marker = _read_marker(marker_path.parent)
        if _marker_matches(marker, identity) and isinstance(marker.get("result"), dict):
            rows.append(marker["result"])
        else:
            others.append(marker_path.parent.name)
    return pd.DataFrame(rows, columns=volumes_columns(fluids)), others


def prepare_out_dir(out_dir: Path, cfg, runtime: Runtime) -> int:
    """Creates ``out_dir``, removes an interrupted run's temporaries and saves the config (rank 0; the other
    ranks wait for it). Returns 0, or 1 with one line when the folder cannot be written."""
    status = 0
    if runtime.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            removed = remove_stale_temporaries(out_dir)
            save_config(cfg, out_dir / cfg.CONFIG_JSON)
            if removed:
                print(f"note: removed {len(removed)} temporary file(s) an interrupted run left in {out_dir}")
        except OSError as error:
            print(f"error: {error_line(error)}; --out {out_dir} cannot be written", file=sys.stderr)
            status = 1
    if runtime.distributed:
        shared = [status]
        dist.broadcast_object_list(shared, src=0)
        status = shared[0]
    return status


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


# --------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    local_cfg = args.local_cfg
    try:
        checkpoint_path = args.checkpoint or latest_checkpoint(
            Path(local_cfg.WORK_DIR) / local_cfg.RUNS_SUBDIR, local_cfg.BEST_CHECKPOINT,
            "; train one with `python train.py`, or name a checkpoint with --checkpoint FILE")
        checkpoint = load_checkpoint(checkpoint_path)
        cfg, notes = inference_config(checkpoint, local_cfg, args.set_names)
        out_dir = args.out or Path(cfg.WORK_DIR) / cfg.PREDICTIONS_SUBDIR / checkpoint_path.resolve().parent.name
        cases, errors = collect_cases(args.inputs, cfg.VENDORS)
        check_out_dir(out_dir, cases, args.inputs, cfg, checkpoint_path)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for line in notes:
        print(f"note: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if not cases:
        print("error: no case to segment", file=sys.stderr)
        return 1

    try:
        runtime = select_runtime(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model = model_from_checkpoint(checkpoint).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    try:
        check_inference_settings(cfg, inference.input_multiple(model))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    reference = checkpoint.get("histogram_reference")
    reference_counts = np.asarray(reference["counts"]) if reference else None
    identity = run_identity(checkpoint_path, checkpoint, cfg)
    status = prepare_out_dir(out_dir, cfg, runtime)
    if status:
        return status
    print(f"{len(cases)} case(s); {checkpoint_path} (epoch {checkpoint.get('epoch')}) on {runtime.device} "
          f"({runtime.autocast_dtype or 'fp32'}{f', {runtime.world_size} processes' if runtime.distributed else ''}"
          f"); output in {out_dir}")

    outputs = Outputs(args.format, args.overlays, args.save_probabilities, args.report)
    # under torchrun each rank segments its share of the cases; rank 0 alone writes the tables at the end
    counts = segment_cases(cases[runtime.rank::runtime.world_size], model, cfg, runtime, reference_counts,
                           out_dir, identity, outputs)
    segmented, skipped, failed = gather_counts(counts, runtime)
    if not runtime.is_main:
        return 1 if failed else 0
    failed = errors + failed
    table, others = volumes_table(out_dir, identity, cfg.FLUIDS)
    try:
        atomic_write_csv(out_dir / cfg.VOLUMES_CSV, table)
    except OSError as error:
        print(f"error: {error_line(error)}; {cfg.VOLUMES_CSV} not written (the case folders are complete: a "
              f"rerun writes it without segmenting them again)", file=sys.stderr)
        return 1
    label_tables.write_label_tables(out_dir, cfg)
    index = report.write_report_index(out_dir, table, cfg) if args.report else None
    if index is not None:
        print(f"reports: {index}")
    if others:
        print(f"note: {len(others)} case folder(s) in {out_dir} made with another checkpoint or settings are not "
              f"in {cfg.VOLUMES_CSV}: {', '.join(others)}", file=sys.stderr)
    print(f"{segmented} case(s) segmented, {skipped} already done, {len(failed)} failed; {cfg.VOLUMES_CSV} "
          f"({len(table)} case(s)), {cfg.ITKSNAP_LABELS_FILE}, {cfg.SLICER_COLOURS_FILE} and {cfg.CONFIG_JSON} in "
          f"{out_dir}")
    return 1 if failed else 0


def run(argv: list[str] | None = None) -> int:
    """:func:`main`, then the process group (under torchrun) closed."""
    try:
        return main(argv)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(run())
