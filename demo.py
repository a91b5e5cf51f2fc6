"""The whole pipeline on the default data in one command (``make demo``).

    python demo.py [--set NAME=VALUE ...]

1. data: DATA_ROOT when it holds any oct.mhd, else the synthetic RETOUCH-like set (generated once in
   SYNTHETIC_ROOT);
2. prepare_data.py (all steps) into WORK_DIR;
3. train.py for DEMO_EPOCHS epochs into WORK_DIR/runs/demo (resumed if a demo run exists);
4. predict.py on the test cases of the split with the best checkpoint, into WORK_DIR/predictions/demo;
5. evaluate.py on those predictions; the summary table is printed and written to .../predictions/demo/evaluation.
A rerun reuses everything that is finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

import evaluate
import predict
import prepare_data
import train
from utils.io.cases import find_cases
from utils.configuration import ConfigError, add_config_arguments, load_config
from utils.synthetic import generate_dataset


def _step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.overrides)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    overrides = [arg for item in args.overrides for arg in ("--set", item)]
    work_dir = Path(cfg.WORK_DIR)

    data_root = Path(cfg.DATA_ROOT)
    if not data_root.is_dir() or not find_cases(data_root, cfg.VENDORS)[0]:
        _step(f"no volumes in {data_root}: synthetic RETOUCH-like data in {cfg.SYNTHETIC_ROOT}")
        data_root = Path(cfg.SYNTHETIC_ROOT)
        generate_dataset(data_root, cases_per_vendor=cfg.SYNTHETIC_CASES_PER_VENDOR, seed=cfg.SEED)

    _step("prepare_data.py")
    if prepare_data.main(["--data-root", str(data_root), "--work-dir", str(work_dir), *overrides]):
        print("demo: prepare_data.py reported problems; going on with the cases it prepared", file=sys.stderr)

    _step("train.py")
    run_dir = work_dir / cfg.RUNS_SUBDIR / "demo"
    resume = ["--resume"] if (run_dir / cfg.LAST_CHECKPOINT).is_file() else []
    if train.main(["--work-dir", str(work_dir), "--run-dir", str(run_dir), *resume,
                   "--set", f"EPOCHS={cfg.DEMO_EPOCHS}", *overrides]):
        return 1

    _step("predict.py on the test cases")
    split = pd.read_csv(work_dir / cfg.SPLIT_CSV, dtype={"case": str})
    index = pd.read_csv(work_dir / cfg.SLICE_INDEX_CSV, dtype={"case": str})
    test_cases = set(split.loc[split["split"] == "test", "case"])
    inputs = sorted(index.loc[index["case"].isin(test_cases), "oct_path"].unique())
    if not inputs:
        print("demo: the split has no test cases to predict", file=sys.stderr)
        return 1
    predictions = work_dir / "predictions" / "demo"
    status = predict.main(["--checkpoint", str(run_dir / cfg.BEST_CHECKPOINT), "--out", str(predictions), *overrides,
                           *inputs])

    _step("evaluate.py")
    status |= evaluate.main(["--pred", str(predictions), "--data-root", str(data_root), "--split-file",
                             str(work_dir / cfg.SPLIT_CSV), "--split", "test", *overrides])
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
