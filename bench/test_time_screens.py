"""Predict-time levers screened in memory on bench/quality.py's trained runs, each against the same model segmenting
as predict.py does: batch norms adapted to each test patient, and depth scales averaged.

usage: python bench/test_time_screens.py {adabn,depth_scales} OUT/real/RUN/seedS [more run folders ...]
       [--data OUT/data/duke_dev] [--set NAME=VALUE ...]

Screens (each variant segments every test patient of every fold; nothing is written):
- ``adabn``: test-time batch-norm adaptation (AdaBN, Li et al. 2016, "Revisiting batch normalization for practical
  domain adaptation"). Variant ``as trained``: the network with its batch norms unfolded, their statistics those of
  the training patients (what predict.py computes, folded). Variant ``adapted``: each batch norm's statistics
  re-estimated on the patient it segments, from one pass of predict.py's inference over the patient's B-scans in
  training mode (the batch statistics averaged over its batches), then the patient segmented with them. It uses
  the test patient's images, never its labels.
- ``depth_scales``: each patient segmented at several depth scales, the softmaxes averaged. A scale s gives the
  volume's axial spacing as s times its header's, so ``DEPTH_SCALE="spacing"`` (the presets') resizes its rows by
  1/s before the network and back after it. Every variant, the single scale 1 included, is labelled from the
  probabilities predict.py stores (uint8, p = value / 255) by the arg-max, so the variants compare alike.

Each fold's model is ``RUN/foldN/run/best.pt`` and its test patients the cases of ``RUN/foldN/pred/`` (where
bench/quality.py put the fold's predictions); images and masks come from ``--data`` (default: the run folder's
OUT/data/duke_dev). ``--set`` gives predict.py settings as ``--set`` does there, after ``PREDICT_REGION=all`` (the
bench's configs segment whole B-scans); e.g. ``--set TTA_FLIP=True``. Printed per run folder: a Markdown table,
each variant's fluid Dice per fold and pooled over all, on the annotated columns and per patient
(bench/quality_measures.py; fluid merged). Exit status 1 when a run folder holds no fold to screen or a case's
files cannot be read (each such case left out in one line), 2 for a
setting that cannot be used (a wrong ``--set``; depth scales with a model that does not scale by spacing).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from error_modes import find_references  # noqa: E402
from quality import COLUMNS, UsageError  # noqa: E402
from quality_measures import MeasureError, mask_measures, pooled_measures, read_labels  # noqa: E402
from report_tables import format_number, markdown_table  # noqa: E402
from utils.configuration import load_config  # noqa: E402  (quality.py puts the repository on the path)
from utils.io.cases import file_case  # noqa: E402
from utils.io.mhd_io import Geometry, VolumeError, read_volume  # noqa: E402
from utils.model.checkpoints import model_from_checkpoint  # noqa: E402
from utils.predict.inference import arg_max_labels  # noqa: E402
from utils.predict.predictor import Predictor  # noqa: E402

# depth_scales' variants: name -> the scales averaged (1.0 alone: the model as predict.py runs it)
DEPTH_SCALE_SETS = {"scale 1": (1.0,), "scales 0.92, 1, 1.08": (0.92, 1.0, 1.08),
                    "scales 0.85, 1, 1.15": (0.85, 1.0, 1.15), "five scales 0.85-1.15": (0.85, 0.92, 1.0, 1.08, 1.15)}
BASE_SETTINGS = ["PREDICT_REGION='all'"]


def adapted_copy(model: nn.Module, run_inference: Callable[[nn.Module], object]) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose batch norms hold the statistics of the inputs ``run_inference``
    feeds it: each norm's running mean and variance reset, then averaged over every batch of that call (momentum
    None) with the norms in training mode; ``model`` itself is unchanged.

    Raises:
        ValueError: a network without batch norms (instance norms, or norms folded into their convs).
    """
    adapted = copy.deepcopy(model).eval()
    norms = [module for module in adapted.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("the network has no batch norm to adapt (folded, or another normalisation)")
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches
        norm.train()
    run_inference(adapted)
    return adapted.eval()


def averaged_fluid(probabilities: list[dict[str, np.ndarray]]) -> np.ndarray:
    """Fluid where the mean over passes of each fluid's probability, beside the background's (1 - their sum),
    wins predict.py's arg-max (:func:`utils.predict.inference.arg_max_labels`: the background among equals).

    Args:
        probabilities: per pass, fluid name -> ``(z, y, x)`` uint8 probability (p = value / 255), one shape.

    Returns:
        ``(z, y, x)`` bool.
    """
    names = list(probabilities[0])
    fluids = sum(torch.stack([torch.from_numpy(np.asarray(one[name], np.float32)) for name in names], dim=1) / 255.0
                 for one in probabilities) / len(probabilities)  # (z, fluids, y, x)
    classes = torch.cat([1.0 - fluids.sum(dim=1, keepdim=True), fluids], dim=1)
    return (arg_max_labels(classes) > 0).numpy()


def read_case(reference: Path, vendors: tuple[str, ...]
              ) -> tuple[np.ndarray, Geometry, str, np.ndarray, tuple[float, float, float]]:
    """The case beside ``reference`` (``reference.mhd``, its ``oct.mhd`` in the same folder): the image
    ``(z, y, x)``, its geometry, its vendor (of ``vendors``, from its folders as predict.py reads it), the
    reference fluid ``(z, y, x)`` bool and the reference's spacing ``(x, y, z)`` mm.

    Raises:
        VolumeError, MeasureError: a file that cannot be read; the message names it.
    """
    path = reference.parent / "oct.mhd"
    image, geometry = read_volume(path)
    labels, spacing = read_labels(reference)
    return image, geometry, file_case(path, vendors).vendor, labels > 0, spacing


def with_axial_scale(geometry: Geometry, scale: float) -> Geometry:
    """``geometry`` with its axial (y) spacing times ``scale``."""
    x, y, z = geometry.spacing_mm
    return Geometry((x, y * scale, z), geometry.origin_mm, geometry.direction)


def adabn_fluid(predictor: Predictor, model: nn.Module, image: np.ndarray, geometry: Geometry,
                vendor: str) -> dict[str, np.ndarray]:
    """The case's fluid ``(z, y, x)`` bool as segmented by ``model`` as trained and by its adapted copy."""
    def segment(network: nn.Module) -> np.ndarray:
        predictor.model = network  # Predictor.segment runs its .model: each variant's network in turn
        return predictor.segment(image, geometry, vendor).labels > 0

    return {"as trained": segment(model), "adapted": segment(adapted_copy(model, segment))}


def depth_scale_fluid(predictor: Predictor, image: np.ndarray, geometry: Geometry,
                      vendor: str) -> dict[str, np.ndarray]:
    """The case's fluid ``(z, y, x)`` bool for each set of :data:`DEPTH_SCALE_SETS`."""
    scales = sorted({scale for chosen in DEPTH_SCALE_SETS.values() for scale in chosen})
    passes = {scale: predictor.segment(image, with_axial_scale(geometry, scale), vendor,
                                       keep_probabilities=True).probabilities for scale in scales}
    return {name: averaged_fluid([passes[scale] for scale in chosen]) for name, chosen in DEPTH_SCALE_SETS.items()}


def unfolded_model(predictor: Predictor) -> nn.Module:
    """The predictor's one network with its batch norms as trained (unfolded), in eval mode on its device."""
    model = model_from_checkpoint(predictor.checkpoints[0]).to(predictor.runtime.device).eval()
    return model.to(memory_format=torch.channels_last) if predictor.runtime.channels_last else model


def screen_run(screen: str, run: Path, references: dict[str, Path], settings: dict
               ) -> tuple[dict[str, dict[str, list]], int]:
    """Variant -> fold name -> the measures (:func:`quality_measures.mask_measures`) of its test patients, and the
    number of cases left out because a file could not be read (each reported in one line)."""
    results: dict[str, dict[str, list]] = {}
    unread = 0
    for fold_dir in sorted(path.parents[1] for path in run.glob("fold*/run/best.pt")):
        cases = sorted(path.name for path in (fold_dir / "pred").iterdir() if path.name in references) \
            if (fold_dir / "pred").is_dir() else []
        if not cases:
            print(f"{fold_dir}: no test case of --data in pred/ (run bench/quality.py for it first); skipped",
                  file=sys.stderr)
            continue
        predictor = Predictor(fold_dir / "run" / "best.pt", **settings)
        if screen == "depth_scales" and predictor.cfg.DEPTH_SCALE != "spacing":
            raise UsageError(f"{fold_dir / 'run' / 'best.pt'}: DEPTH_SCALE={predictor.cfg.DEPTH_SCALE!r}; the depth "
                             f"scales screen needs a model trained with DEPTH_SCALE='spacing' (the presets')")
        model = unfolded_model(predictor) if screen == "adabn" else None
        for case in cases:
            try:
                image, geometry, vendor, reference, spacing = read_case(
                    references[case], predictor.settings.preprocess.vendor_files.vendors)
            except (VolumeError, MeasureError) as error:
                print(f"error: {error}; {case} left out", file=sys.stderr)
                unread += 1
                continue
            fluid = (adabn_fluid(predictor, model, image, geometry, vendor) if screen == "adabn"
                     else depth_scale_fluid(predictor, image, geometry, vendor))
            dice = []
            for variant, predicted in fluid.items():
                measures = mask_measures(predicted, reference, spacing, COLUMNS)
                results.setdefault(variant, {}).setdefault(fold_dir.name, []).append({"case": case, **measures})
                dice.append(f"{variant} {format_number(measures['dice'], 3)}")
            print(f"{fold_dir} {case}: {', '.join(dice)}", file=sys.stderr, flush=True)
    return results, unread


def result_table(results: dict[str, dict[str, list]]) -> str:
    """Markdown: one row per variant, its Dice per fold, pooled, on the annotated columns, per patient."""
    folds = sorted({fold for by_fold in results.values() for fold in by_fold})
    patients = sorted({case["case"] for by_fold in results.values() for cases in by_fold.values() for case in cases})
    header = ["variant", *(f"Dice {fold}" for fold in folds), "pooled Dice",
              f"pooled Dice x {COLUMNS[0]}-{COLUMNS[1] - 1}", "area ratio P/G", *patients]
    rows = []
    for variant, by_fold in results.items():
        every = [case for fold in folds for case in by_fold.get(fold, [])]
        pooled = pooled_measures(every)
        dice = {case["case"]: case["dice"] for case in every}
        rows.append([variant, *(format_number(pooled_measures(by_fold.get(fold, []))["dice_pooled"], 3)
                                for fold in folds),
                     format_number(pooled["dice_pooled"], 3), format_number(pooled["dice_pooled_cols"], 3),
                     format_number(pooled["area_ratio"], 2), *(format_number(dice.get(name), 3) for name in patients)])
    return markdown_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("screen", choices=["adabn", "depth_scales"], help="the lever screened")
    parser.add_argument("runs", nargs="+", type=Path, help="bench/quality.py run folders: OUT/real/RUN/seedS")
    parser.add_argument("--data", type=Path, help="the built real set (default: OUT/data/duke_dev of the run)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                        help="a predict.py setting (repeatable; after PREDICT_REGION='all')")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    items = [*BASE_SETTINGS, *args.settings]
    try:
        cfg = load_config(items)
    except ValueError as error:
        print(f"error: --set: {error}", file=sys.stderr)
        return 2
    settings = {item.partition("=")[0]: getattr(cfg, item.partition("=")[0]) for item in items}
    failed = False
    for run in args.runs:
        data = args.data or run.resolve().parents[2] / "data" / "duke_dev"
        try:
            results, unread = screen_run(args.screen, run, find_references(data), settings)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        failed = failed or unread > 0
        if not results:
            if not unread:  # (cases that could not be read have said so)
                print(f"{run}: no fold with run/best.pt and test cases in pred/ (expected a bench/quality.py run "
                      f"folder, OUT/real/RUN/seedS)", file=sys.stderr)
            failed = True
            continue
        print(f"\n{run} ({args.screen}; {', '.join(items)})\n\n{result_table(results)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
