"""What cross-vendor transfer costs: train on one vendor's synthetic scans, segment every vendor's.

    python bench/cross_vendor.py [--config smp_unet_cedice_all_poly] [--epochs 8] [--seeds 0] [--out DIR]
    python bench/cross_vendor.py --smoke             # tiny set, a few batches: checks that everything runs
    python bench/cross_vendor.py --table-only [--out DIR]

For each vendor V (Cirrus, Spectralis, Topcon) of the default synthetic set (``python -m utils.synthetic``, 6 cases
per vendor): a data root holding V's cases alone (hard links into OUT/data), prepared by ``prepare_data.py`` as a
user with one device would (its histogram reference: the first Spectralis case; without Spectralis, the first
matched-vendor case, with a note), trained by ``train.py`` on V's first 4 cases (the 4th validates, or trains too
when the config trains without validation, as the ``improved_patches`` preset does), then ``predict.py`` on V's last 2
cases and on all 6 cases of each other vendor. Scores, fluid merged (label > 0), from each case's segmentation.mhd against
its reference.mhd (bench/quality_measures.py): Dice pooled over all B-scans of a test vendor's cases, and the
predicted over reference fluid area. A row is a training vendor; its own vendor's column is the in-vendor figure
to compare the others with.

Budget as work: ``--epochs E`` epochs of the config's ``BATCHES_PER_EPOCH`` batches (``CONFIGS`` of
bench/quality.py; default the ``improved_patches`` preset's ``smp_unet_cedice_all_poly``); the training minutes and the
machine are recorded beside them.

Outputs under OUT (default work/cross_vendor): data/ (the synthetic set), <V>/data (V's cases), <V>/prepared,
<run>/seed<s>/<V>/ (run/, pred/, logs), results/<run>-seed<s>.json. Finished training and predicted cases are
reused on a rerun. Exit status: 0 done, 1 a step failed (named, with its log), 2 usage error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

import quality  # noqa: E402
from quality import CONFIGS, Fold, StepFailed, UsageError  # noqa: E402
from quality_measures import MeasureError, case_measures, pooled_measures  # noqa: E402
from report_tables import format_number, markdown_table  # noqa: E402

VENDORS = ("Cirrus", "Spectralis", "Topcon")  # config.VENDORS, in the synthetic set's folder names
TRAIN_CASES, VAL_CASES = 3, 1  # of each vendor's cases, in name order; the rest are its test cases
DEFAULT_CONFIG = quality.PRESET_CONFIGS["improved_patches"]
DEFAULT_EPOCHS = 8
DEFAULT_OUT = "work/cross_vendor"
SMOKE_OUT = "work/cross_vendor-smoke"
SMOKE_TRAIN = ["EPOCHS=1", "BATCHES_PER_EPOCH=2", "VAL_BSCANS=4"]
RESULT_VERSION = 1


def vendor_of(oct_path: Path) -> str:
    """The vendor of a synthetic case, from its ``RETOUCH-TrainingSet-<Vendor>`` folder."""
    return oct_path.parent.parent.name.rsplit("-", 1)[-1]


def vendor_data_root(all_octs: dict[str, Path], vendor: str, root: Path) -> Path:
    """``root`` holding ``vendor``'s cases alone, as hard links (copies where links cannot be made)."""
    for case, oct_path in all_octs.items():
        if vendor_of(oct_path) != vendor:
            continue
        target = root / oct_path.parent.parent.name / case
        if not target.is_dir():
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            try:
                shutil.copytree(oct_path.parent, partial, copy_function=os.link)
            except OSError:
                shutil.rmtree(partial, ignore_errors=True)
                shutil.copytree(oct_path.parent, partial)
            partial.rename(target)
    return root


def vendor_fold(all_octs: dict[str, Path], vendor: str, without_validation: bool) -> Fold:
    """``vendor``'s cases split by name: the first TRAIN_CASES train, the next VAL_CASES validate, the rest test."""
    cases = sorted(case for case, path in all_octs.items() if vendor_of(path) == vendor)
    fold = Fold(vendor, tuple(cases[TRAIN_CASES + VAL_CASES:]), tuple(cases[TRAIN_CASES:TRAIN_CASES + VAL_CASES]),
                tuple(cases[:TRAIN_CASES]))
    if not fold.test:
        raise StepFailed("split", f"{vendor}: {len(cases)} case(s), none left to test")
    return fold.without_validation() if without_validation else fold


def run_vendor(args: argparse.Namespace, all_octs: dict[str, Path], vendor: str, seed: int) -> dict:
    """Prepare, train on ``vendor`` and segment every vendor's test cases; the measures by test vendor."""
    label = f"[train on {vendor} seed {seed}]"
    fold = vendor_fold(all_octs, vendor, bool(CONFIGS[args.config].get("no_validation")))
    base = args.out / vendor
    data_root = vendor_data_root(all_octs, vendor, base / "data")
    split_file, work_dir = base / "split.csv", base / "prepared"
    quality.write_split(split_file, fold)
    print(f"{label} prepare_data.py ...", flush=True)
    quality.run_step("prepare_data.py", quality.script("prepare_data.py", "--data-root", data_root, "--work-dir",
                                                       work_dir, "--split-file", split_file), base / "prepare.log")
    fold_dir = args.out / args.run_name / f"seed{seed}" / vendor
    run_dir = fold_dir / "run"
    overrides = [*CONFIGS[args.config]["train"], f"EPOCHS={args.epochs}", *(SMOKE_TRAIN if args.smoke else []),
                 f"SEED={seed}"]
    training = quality.train_fold(quality.script("train.py", "--work-dir", work_dir, "--run-dir", run_dir,
                                                 *quality._sets(overrides)), fold_dir, run_dir, label)
    tests = {case: path for case, path in all_octs.items() if vendor_of(path) != vendor or case in fold.test}
    pred_dir = fold_dir / "pred"
    seconds = quality.run_step("predict.py", quality.script(
        "predict.py", "--checkpoint", run_dir / "best.pt", "--out", pred_dir, *quality._sets(
            CONFIGS[args.config]["predict"]), *tests.values()), fold_dir / "predict.log")
    print(f"{label} predicted {len(tests)} case(s) in {seconds:.0f} s", flush=True)
    by_test_vendor = {}
    for test_vendor in VENDORS:
        cases = {}
        for case, path in tests.items():
            if vendor_of(path) == test_vendor:
                try:
                    cases[case] = case_measures(pred_dir / case / "segmentation.mhd",
                                                path.parent / "reference.mhd", quality.COLUMNS)
                except MeasureError as error:
                    raise StepFailed("measures", str(error)) from None
        by_test_vendor[test_vendor] = {**pooled_measures(list(cases.values())), "cases": sorted(cases)}
    print(f"{label} Dice " + ", ".join(f"{test_vendor} {format_number(measures['dice_pooled'], 3)}"
                                       for test_vendor, measures in by_test_vendor.items()), flush=True)
    return {"cases_by_split": fold.as_dict(), "train": training, "by_test_vendor": by_test_vendor}


def table(results: list[dict]) -> str:
    """Markdown: one row per (training vendor, seed), pooled Dice and area ratio per test vendor."""
    header = ["trained on", "seed", "epochs", "train min",
              *[f"Dice {vendor}" for vendor in VENDORS], *[f"area ratio {vendor}" for vendor in VENDORS]]
    rows = []
    for result in results:
        for vendor, run in result["by_train_vendor"].items():
            measures = run["by_test_vendor"]
            rows.append([vendor, str(result["seed"]), str(run["train"].get("epochs_done")),
                         format_number(run["train"]["wall_seconds"] / 60, 1),
                         *[format_number(measures[test]["dice_pooled"], 3) for test in VENDORS],
                         *[format_number(measures[test]["area_ratio"], 2) for test in VENDORS]])
    machines = sorted({result.get("machine", "?") for result in results})
    runs = sorted({f"{result['config']}, {result['epochs']} epochs" for result in results})
    return f"{'; '.join(runs)}; {'; '.join(machines)}\n\n" + markdown_table(header, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="a CONFIGS name of bench/quality.py (default: %(default)s, the improved_patches preset)")
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help="training epochs (default: %(default)s)")
    parser.add_argument("--seeds", default="0", help="comma-separated train.py SEEDs (default: %(default)s)")
    parser.add_argument("--out", default=None, help=f"output folder (default: {DEFAULT_OUT})")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic set, 1 epoch of 2 batches")
    parser.add_argument("--table-only", action="store_true", help="print the table of the results under --out")
    args = parser.parse_args(argv)
    try:
        if args.config not in CONFIGS or "train" not in CONFIGS[args.config] or CONFIGS[args.config].get(
                "ensemble_seeds"):
            raise UsageError(f"--config {args.config}: expected a trained config of bench/quality.py's CONFIGS "
                             f"(not a predict-only variant nor an ensemble)")
        if args.epochs < 1:
            raise UsageError(f"--epochs {args.epochs}: expected at least 1")
        args.seed_list = quality.parse_seeds(args.seeds)
    except UsageError as error:
        parser.error(str(error))
    args.out = Path(args.out or (SMOKE_OUT if args.smoke else DEFAULT_OUT)).resolve()
    args.run_name = f"{args.config}-{args.epochs}ep" + ("-smoke" if args.smoke else "")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = args.out / "results"
    if not args.table_only:
        try:
            all_octs = quality.find_octs(quality.make_synthetic(args.out, args.smoke))
            machine = quality.machine_description()
            for seed in args.seed_list:
                result = {"version": RESULT_VERSION, "config": args.config, "epochs": args.epochs,
                          "smoke": args.smoke, "seed": seed, "machine": machine,
                          "date": datetime.datetime.now().isoformat(timespec="seconds"),
                          "by_train_vendor": {vendor: run_vendor(args, all_octs, vendor, seed) for vendor in VENDORS}}
                results_dir.mkdir(parents=True, exist_ok=True)
                path = results_dir / f"{args.run_name}-seed{seed}.json"
                path.with_suffix(".tmp").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
                path.with_suffix(".tmp").replace(path)
        except StepFailed as error:
            log = f" (log: {error.log})" if error.log else ""
            print(f"error: {error.step}: {error}{log}", file=sys.stderr)
            return 1
    results = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(results_dir.glob("*.json"))]
    if not results:
        print(f"error: no result under {results_dir}", file=sys.stderr)
        return 1
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
