"""A fluid threshold chosen honestly: each fold labelled at the threshold that scores best on the other folds.

    python bench/threshold_choice.py [--out work/quality] [--dataset real] [--seeds 0,1] [--epochs 15]
                                     [--configs improved_strips_wide_tta_thr30,...]

``FLUID_THRESHOLD`` (predict.py: fluid where ``1 - p(background)`` reaches it) is a predict-only setting; picking
the value that scores best on the development folds and reporting that score measures the folds, not the
threshold. Here bench/quality.py's runs of one trained model at several thresholds (configs that differ only in
``FLUID_THRESHOLD``, the same seed, trained ``--epochs`` without a wall-clock cap) are read, and for each fold the
threshold is the one with the best pooled fluid Dice over the *other* folds' test patients (those the fold's model
was trained on: its own test patients are never looked at); the fold's patients are then scored at that
threshold, and all folds pooled. The table gives, per seed, each threshold's own pooled Dice (the best of them is
optimistic: chosen on the patients it is measured on) and the cross-chosen one's. Exit status 1 when no seed has
every config on at least two folds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (CONFIGS, DEFAULT_EPOCHS, DEFAULT_OUT, FLUID_THRESHOLD_PERCENTS, REPO, UsageError,  # noqa: E402
                     load_results, parse_seeds)
from utils.configuration import load_config  # noqa: E402  (quality.py puts the repository on the path)
from quality_measures import pooled_measures  # noqa: E402
from report_tables import format_number, markdown_table  # noqa: E402

DEFAULT_CONFIGS = ",".join(f"improved_strips_wide_tta_thr{percent}" for percent in FLUID_THRESHOLD_PERCENTS)


def config_threshold(config: str) -> float:
    """The ``FLUID_THRESHOLD`` a bench/quality.py config predicts with (0.0: the arg-max); UsageError for a name
    that is not a config."""
    if config not in CONFIGS:
        raise UsageError(f"--configs: {config!r} is not a bench/quality.py config")
    return float(load_config(CONFIGS[config].get("predict", [])).FLUID_THRESHOLD)


def cross_chosen(by_threshold: dict[float, dict[str, dict]]) -> dict:
    """Each fold scored at the threshold that is best on the other folds, all folds pooled.

    Args:
        by_threshold: threshold -> fold name -> that fold's measures (bench/quality.py's fold result: ``cases``,
            case name -> :func:`quality_measures.case_measures`); every threshold with the same folds, >= 2.

    Returns:
        ``chosen`` (fold -> threshold; ties go to the lower threshold) and ``pooled``
        (:func:`quality_measures.pooled_measures` over every fold's cases at its chosen threshold).
    """
    thresholds = sorted(by_threshold)
    folds = sorted(by_threshold[thresholds[0]])
    chosen, cases = {}, []
    for fold in folds:
        def others_dice(threshold: float) -> float:
            others = [case for name in folds if name != fold
                      for case in by_threshold[threshold][name]["cases"].values()]
            return pooled_measures(others)["dice_pooled"] or 0.0
        chosen[fold] = max(thresholds, key=others_dice)  # max keeps the first (lowest) of equals
        cases += by_threshold[chosen[fold]][fold]["cases"].values()
    return {"chosen": chosen, "pooled": pooled_measures(cases)}


def choice_table(results: list[dict], dataset: str, configs: list[str], seeds: list[int] | None,
                 epochs: int = DEFAULT_EPOCHS) -> str:
    """The Markdown table of :func:`cross_chosen` per seed (of ``seeds``; None: all) with every config trained
    ``epochs`` (no wall-clock cap) on >= 2 common folds of ``dataset``; "" for none."""
    thresholds = {config: config_threshold(config) for config in configs}
    runs: dict[int, dict[float, dict]] = {}
    for result in results:
        if (result["dataset"] == dataset and result["config"] in thresholds and not result.get("smoke")
                and result.get("epochs", DEFAULT_EPOCHS) == epochs and not result.get("budget_minutes")
                and (seeds is None or result["seed"] in seeds)):
            runs.setdefault(result["seed"], {})[thresholds[result["config"]]] = result["folds"]
    header = ["seed", *(f"t = {t:g}" for t in sorted(set(thresholds.values()))), "chosen per fold (other folds)",
              "cross-chosen pooled Dice", "area ratio P/G"]
    rows = []
    for seed, by_threshold in sorted(runs.items()):
        folds = set.intersection(*(set(found) for found in by_threshold.values()))
        if len(by_threshold) < len(set(thresholds.values())) or len(folds) < 2:
            continue
        common = {t: {fold: found[fold] for fold in folds} for t, found in by_threshold.items()}
        choice = cross_chosen(common)
        rows.append([str(seed),
                     *(format_number(pooled_measures([case for fold in common[t].values()
                                                      for case in fold["cases"].values()])["dice_pooled"], 3)
                       for t in sorted(common)),
                     ", ".join(f"{fold} {t:g}" for fold, t in choice["chosen"].items()),
                     format_number(choice["pooled"]["dice_pooled"], 3),
                     format_number(choice["pooled"]["area_ratio"], 2)])
    return markdown_table(header, rows) if rows else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / DEFAULT_OUT), help="bench/quality.py's output folder")
    parser.add_argument("--dataset", default="real", help="data set of the runs (default: real)")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="comma-separated configs that differ only in FLUID_THRESHOLD (default: %(default)s)")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default: every seed found)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help="the runs' training budget in epochs (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        configs = [name for name in args.configs.split(",") if name.strip()]
        thresholds = [config_threshold(config) for config in configs]
        if len(set(thresholds)) < 2:
            raise UsageError(f"--configs {args.configs!r}: expected configs with at least two FLUID_THRESHOLD values")
        seeds = parse_seeds(args.seeds) if args.seeds else None
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, errors = load_results(Path(args.out))
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    table = choice_table(results, args.dataset, configs, seeds, args.epochs)
    if not table:
        print(f"error: no seed under {args.out} has every one of {', '.join(configs)} on at least two "
              f"folds of the {args.dataset} set at {args.epochs} epochs", file=sys.stderr)
        return 1
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
