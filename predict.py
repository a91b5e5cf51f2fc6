"""Segments OCT volumes with a trained U-Net: label volumes, fluid volumes and presence scores.

    python predict.py [--checkpoint FILE [FILE ...]] [--out DIR] [--format mhd|mha|nii.gz] [--save-probabilities]
                      [--overlays [N|all]] [--report] [--set NAME=VALUE ...] INPUT...

INPUT: ``oct.mhd`` files, or folders searched for them and for vendor files at any depth (the RETOUCH layout; see
utils/io/cases.py), or the devices' own files: Heidelberg ``.vol``/``.e2e``/Heyex XML export ``.xml``, Zeiss Cirrus
``.img``, Topcon ``.fds``/``.fda``, OCT DICOM
``.dcm`` (utils/io/vendor_files.py: vendor and spacing from the file; ``CIRRUS_IMG_SPACING_MM`` and
``E2E_SPACING_XZ_MM`` supply what those files lack). A case is named after the folder of its ``oct.mhd``, or after
a vendor file's name without its suffix. Default checkpoint: ``best.pt`` of the most recent run under
``WORK_DIR/runs``; default ``--out``: ``WORK_DIR/predictions/<run name>``. Nothing is written next to the inputs.
Several checkpoints (``--checkpoint A.pt B.pt``: models of several seeds or folds) segment as an ensemble: their
softmax probabilities are averaged (utils/predict/ensemble.py); they must prepare their input alike, and the
settings are the first one's (default ``--out``: ``WORK_DIR/predictions/<run A>+<run B>``).

Each volume gets exactly the preprocessing and depth resolution the model was trained with: the settings come from
the checkpoint; ``--set`` changes only those about this machine and inference (``LOCAL_SETTINGS`` in
utils/predict/settings.py), and any other override that differs from the checkpoint is ignored with a note.
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
utils/predict/presence.py.

A run holds ``--out`` for its whole duration (a lock on ``OUT/.predict.lock``, released by the system however the run
ends; a torchrun launch holds it once, from rank 0): a second run on the same folder is refused at once with a line
naming the run that holds it. Exit status 1 when a case failed (the others are still segmented) or there was nothing
to do, 2 on bad arguments or an --out in use.

From Python, ``utils.predict.predictor.Predictor(checkpoint).segment(path_or_array)`` segments one volume at a time
with the same settings and functions, writing nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch.distributed as dist

from utils.configuration import ConfigError, add_config_arguments, load_config, set_names
from utils.io.layout import predictions_dir
from utils.io.mhd_io import VOLUME_FORMATS
from utils.io.vendor_files import VENDOR_SUFFIXES, VendorFileSettings
from utils.model.checkpoints import latest_checkpoint
from utils.model.runtime import RuntimeSettings
from utils.predict.inputs import collect_cases
from utils.predict.markers import ensemble_identity
from utils.predict.out_dir import check_out_dir, prepare_out_dir
from utils.predict.outputs import Outputs
from utils.predict.predictor import load_network, load_trained
from utils.predict.segment import gather_counts, model_histogram_reference, reference_counts, segment_cases
from utils.predict.tables import write_run_tables

DEFAULT_OVERLAYS = 5  # B-scans drawn by a bare --overlays
CHECKPOINT_SUFFIXES = (".pt", ".pth")  # what --checkpoint takes; the first other path after it is an input


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                        help="oct.mhd files, folders searched for them at any depth, or vendor files ("
                             + " ".join(VENDOR_SUFFIXES) + ")")
    parser.add_argument("--checkpoint", type=Path, nargs="+", default=None, metavar="FILE",
                        help="model checkpoint, a .pt file (default: best.pt of the most recent run under "
                             "WORK_DIR/runs); several: an ensemble, their probabilities averaged")
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
    if args.checkpoint:  # the inputs right after --checkpoint's files are taken by it: give them back
        first_input = next((i for i, path in enumerate(args.checkpoint)
                            if path.suffix.lower() not in CHECKPOINT_SUFFIXES), len(args.checkpoint))
        args.inputs = args.checkpoint[first_input:] + args.inputs
        args.checkpoint = args.checkpoint[:first_input] or None
        if args.checkpoint is None:
            parser.error(f"--checkpoint {args.inputs[0]}: expected a checkpoint file ending in "
                         f"{' or '.join(CHECKPOINT_SUFFIXES)}")
    if not args.inputs:
        parser.error("the following arguments are required: INPUT")
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
    # the names given with --set (a preset's model settings are not notes: they describe training)
    args.set_names = set_names(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    local_cfg = args.local_cfg
    try:
        checkpoint_paths = args.checkpoint or [latest_checkpoint(
            Path(local_cfg.WORK_DIR) / local_cfg.RUNS_SUBDIR, local_cfg.BEST_CHECKPOINT,
            "; train one with `python train.py`, or name a checkpoint with --checkpoint FILE")]
        checkpoints, cfg, settings, notes = load_trained(checkpoint_paths, local_cfg, args.set_names)
        run_names = "+".join(dict.fromkeys(path.resolve().parent.name for path in checkpoint_paths))
        out_dir = args.out or predictions_dir(cfg.WORK_DIR, run_names, cfg.PREDICTIONS_SUBDIR)
        cases, errors = collect_cases(args.inputs, cfg.VENDORS)
        check_out_dir(out_dir, cases, args.inputs, settings, checkpoint_paths, local_cfg.DATA_ROOT)
        given_reference = local_cfg.HISTOGRAM_REFERENCE if "HISTOGRAM_REFERENCE" in args.set_names else ""
        reference, reference_supplied, reference_notes = model_histogram_reference(
            checkpoints[0], given_reference, VendorFileSettings.from_config(local_cfg), cases)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for line in notes + reference_notes:
        print(f"note: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if not cases:
        print("error: no case to segment", file=sys.stderr)
        return 1

    try:
        runtime, model = load_network(checkpoint_paths, checkpoints, RuntimeSettings.from_config(cfg), settings)
    except ConfigError as error:  # no such device, or inference settings the network cannot work with
        print(f"error: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a network that cannot be built
        print(f"error: {error}", file=sys.stderr)
        return 1
    histogram_counts = reference_counts(reference)
    identity = ensemble_identity(checkpoint_paths, checkpoints, settings)
    if reference_supplied:  # cases matched to another supplied reference are redone
        identity["histogram_reference"] = {"path": reference["path"], "counts": reference["counts"]}
    # the run holds --out until its tables are written: a second run on the folder is refused (exit 2)
    with prepare_out_dir(out_dir, cfg, settings.config_json, runtime) as status:
        if status:
            return status
        models = "; ".join(f"{path} (epoch {member.get('epoch')})"
                           for path, member in zip(checkpoint_paths, checkpoints))
        print(f"{len(cases)} case(s); {models}{' (ensemble)' if len(checkpoints) > 1 else ''} on {runtime.device} "
              f"({runtime.autocast_dtype or 'fp32'}"
              f"{f', {runtime.world_size} processes' if runtime.distributed else ''}); output in {out_dir}")
        if runtime.note and runtime.is_main:
            print(f"note: {runtime.note}")

        outputs = Outputs(args.format, args.overlays, args.save_probabilities, args.report)
        # under torchrun each rank segments its share of the cases; rank 0 alone writes the tables at the end
        counts = segment_cases(cases[runtime.rank::runtime.world_size], model, settings, runtime,
                               histogram_counts, out_dir, identity, outputs)
        segmented, skipped, failed = gather_counts(counts, runtime)
        if not runtime.is_main:
            return 1 if failed else 0
        failed = errors + failed
        table = write_run_tables(out_dir, identity, settings, args.report)
        if table is None:
            return 1
        print(f"{segmented} case(s) segmented, {skipped} already done, {len(failed)} failed; {settings.volumes_csv} "
              f"({len(table)} case(s)), {settings.itksnap_labels_file}, {settings.slicer_colours_file} and "
              f"{settings.config_json} in {out_dir}")
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
