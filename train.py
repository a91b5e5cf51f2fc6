"""Trains the method's U-Net on the slices prepare_data.py wrote.

    python train.py [--work-dir DIR] [--run-dir DIR] [--resume | --init-from CHECKPOINT] [--set NAME=VALUE ...]
    torchrun --nproc_per_node N train.py ...        # several GPUs (DDP), the same options

Writes a run folder (default WORK_DIR/runs/<date-time>): config.json, train.log, log.csv (one row per epoch),
curves.png, last.pt and best.pt (by validation loss, as the original, or BEST_BY). ``--resume`` continues a run
from last.pt with its optimiser state; without ``--run-dir`` it resumes the most recent run. An existing run is
never trained over without ``--resume``. ``TRAIN_BUDGET_MINUTES`` stops training when the budget runs out,
within the running epoch (which is then validated and saved as usual).

Exit status: 0 done, 1 the prepared data could not be used (named in the message), 2 bad arguments or settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch.distributed as dist

from utils.configuration import ConfigError, add_config_arguments
from utils.io.files import error_line
from utils.train.session import log, run_training


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", help="where prepare_data.py wrote its outputs (default: config WORK_DIR)")
    parser.add_argument("--run-dir", help="run folder (default: WORK_DIR/runs/<date-time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir (default: the most "
                                                              "recent run) from its last.pt")
    parser.add_argument("--init-from", type=Path, default=None, metavar="CHECKPOINT",
                        help="start a new run from this checkpoint's network weights (e.g. adversarial training "
                             "from a finished segmentation run, as the original)")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_dir = run_training(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:  # unusable prepared data, an unwritable or full run folder
        print(f"error: {error_line(error)}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    log.info(f"done: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
