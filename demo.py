"""The whole pipeline on the default data in one command (``make demo``).

    python demo.py [--set NAME=VALUE ...]

1. data: DATA_ROOT when it holds any oct.mhd, else the synthetic RETOUCH-like set (generated once in
   SYNTHETIC_ROOT);
2. prepare_data.py (all steps) into WORK_DIR;
3. train.py with the preset DEMO_PRESET (``--preset``; "improved_patches": smp's U-Net, fast on any CPU) for at most
   DEMO_EPOCHS epochs and at most DEMO_TRAIN_MINUTES of training, with DEMO_OVERRIDES on top, into
   WORK_DIR/runs/demo (resumed if a demo run exists);
4. predict.py on the test cases of the split with the best checkpoint and the preset, into
   WORK_DIR/predictions/demo;
5. evaluate.py on those predictions; the summary table and the Dice of every fluid merged, pooled over the test
   cases, are printed and written to .../predictions/demo/evaluation.
A rerun reuses everything that is finished. The command line's ``--set`` win over the preset and DEMO_OVERRIDES.

Exit status, as every script's: 0 done; 1 some inputs failed (a step reported files it could not use; the demo
goes on where it can); 2 a usage or configuration error (bad option or ``--set``, ``DEVICE=cuda`` without a GPU,
a SYNTHETIC_ROOT holding other data): the demo stops.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import evaluate
import predict
import prepare_data
import train
from utils.configuration import ConfigError, add_config_arguments, load_config
from utils.io.cases import find_cases
from utils.io.layout import predictions_dir, run_dir
from utils.io.tables import read_slice_index, read_split_cases
from utils.synthetic import generate_dataset

DEMO_RUN = "demo"  # the run's name: WORK_DIR/runs/<this>, WORK_DIR/predictions/<this>
USAGE_ERROR = 2  # the exit status of a usage or configuration error


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def choose_data_root(cfg) -> Path:
    """DATA_ROOT when it holds a case, else the synthetic set in SYNTHETIC_ROOT (generated when missing).

    Raises:
        FileExistsError: SYNTHETIC_ROOT holds data the generator did not write, or a set made with other settings.
        ValueError: SYNTHETIC_CASES_PER_VENDOR < 1.
    """
    data_root = Path(cfg.DATA_ROOT)
    if data_root.is_dir() and find_cases(data_root, cfg.VENDORS)[0]:
        return data_root
    _step(f"no volumes in {data_root}: synthetic RETOUCH-like data in {cfg.SYNTHETIC_ROOT}")
    generate_dataset(cfg.SYNTHETIC_ROOT, cfg.SYNTHETIC_CASES_PER_VENDOR, seed=cfg.SEED)
    return Path(cfg.SYNTHETIC_ROOT)


def inputs_of_test_split(work_dir: Path, cfg) -> list[str]:
    """The volume paths (``oct.mhd`` or vendor files) of the split's test cases, from the split and slice index that
    prepare_data wrote.

    Raises:
        FileNotFoundError, ValueError: a table is missing or unusable, or the split has no test case.
    """
    test_cases = read_split_cases(work_dir / cfg.SPLIT_CSV, "test")
    index = read_slice_index(work_dir / cfg.SLICE_INDEX_CSV, cfg.FLUIDS)
    return sorted(index.loc[index["case"].isin(test_cases), "oct_path"].unique())


def as_arguments(items) -> list[str]:
    """``--set`` arguments of NAME=VALUE items."""
    return [argument for item in items for argument in ("--set", item)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.overrides)
        data_root = choose_data_root(cfg)
    except (ConfigError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    overrides = as_arguments(args.overrides)
    preset = ["--preset", cfg.DEMO_PRESET] if cfg.DEMO_PRESET else []
    work_dir = Path(cfg.WORK_DIR)
    statuses = []

    _step("prepare_data.py")
    statuses.append(prepare_data.main(["--data-root", str(data_root), "--work-dir", str(work_dir), *overrides]))
    if statuses[-1] == USAGE_ERROR:
        return USAGE_ERROR
    if statuses[-1]:
        print("demo: prepare_data.py reported problems; going on with the cases it prepared", file=sys.stderr)

    _step("train.py")
    run = run_dir(work_dir, DEMO_RUN, cfg.RUNS_SUBDIR)
    resume = ["--resume"] if (run / cfg.LAST_CHECKPOINT).is_file() else []
    demo_length = as_arguments([f"EPOCHS={cfg.DEMO_EPOCHS}", f"TRAIN_BUDGET_MINUTES={cfg.DEMO_TRAIN_MINUTES}",
                                *cfg.DEMO_OVERRIDES])
    status = train.main(["--work-dir", str(work_dir), "--run-dir", str(run), *resume, *preset, *demo_length,
                         *overrides])
    if status:
        return status

    _step("predict.py on the test cases")
    try:
        inputs = inputs_of_test_split(work_dir, cfg)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    predictions = predictions_dir(work_dir, DEMO_RUN, cfg.PREDICTIONS_SUBDIR)
    statuses.append(predict.main(["--checkpoint", str(run / cfg.BEST_CHECKPOINT), "--out", str(predictions),
                                  *preset, *overrides, *inputs]))
    if statuses[-1] == USAGE_ERROR:
        return USAGE_ERROR

    _step("evaluate.py")
    statuses.append(evaluate.main(["--pred", str(predictions), "--data-root", str(data_root), "--split-file",
                                   str(work_dir / cfg.SPLIT_CSV), "--split", "test", *overrides]))
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main())
