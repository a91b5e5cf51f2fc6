"""Trains the method's U-Net on the slices prepare_data.py wrote.

    python train.py [--work-dir DIR] [--run-dir DIR] [--resume] [--set NAME=VALUE ...]
    torchrun --nproc_per_node N train.py ...        # several GPUs (DDP), the same options

Writes a run folder (default WORK_DIR/runs/<date-time>): config.json, train.log, log.csv (one row per epoch),
curves.png, last.pt and best.pt (by validation mean fluid Dice). ``--resume`` continues a run from last.pt with
its optimiser state; without ``--run-dir`` it resumes the most recent run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from utils.configuration import (ConfigError, add_config_arguments, config_from_dict, config_to_dict, load_config,
                                 save_config)
from utils.data_pipeline import (loader_workers, read_split_slices, slice_records, training_loader,
                                 validation_batches)
from utils.losses import balanced_ce_dice_loss
from utils.model import Discriminator, build_unet, load_checkpoint, save_checkpoint, unet_arguments
from utils.runtime import Runtime, select_runtime
from utils.training import (BEST_CHECKPOINT, CURVES_PNG, LAST_CHECKPOINT, Adversary, EpochTimer, append_log,
                            latest_checkpoint, plot_curves, score_of, train_epoch, validate)

log = logging.getLogger("train")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", help="where prepare_data.py wrote its outputs (default: config WORK_DIR)")
    parser.add_argument("--run-dir", help="run folder (default: WORK_DIR/runs/<date-time>)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir (default: the most "
                                                              "recent run) from its last.pt")
    add_config_arguments(parser)
    return parser.parse_args(argv)


def _shared_run_dir(run_dir: Path | None, runs_dir: Path, runtime: Runtime) -> Path:
    """The run folder, named by rank 0 and shared with the other ranks."""
    if run_dir is None:
        run_dir = runs_dir / time.strftime("%Y%m%d-%H%M%S")
    if runtime.distributed:
        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
    return run_dir


def _setup_logging(run_dir: Path, is_main: bool) -> None:
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.handlers.clear()
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if is_main:
        file_handler = logging.FileHandler(run_dir / "train.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(file_handler)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _histogram_reference(work_dir: Path, cfg) -> dict | None:
    path = work_dir / cfg.HISTOGRAM_REFERENCE_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def run(args: argparse.Namespace) -> Path:
    """Trains as the arguments say; returns the run folder."""
    overrides = args.overrides + ([f"WORK_DIR={args.work_dir}"] if args.work_dir else [])
    cfg = load_config(overrides)
    work_dir = Path(cfg.WORK_DIR)
    runs_dir = work_dir / cfg.RUNS_SUBDIR
    checkpoint = None
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.resume:
        run_dir = run_dir or latest_checkpoint(runs_dir, LAST_CHECKPOINT, " to resume").parent
        checkpoint = load_checkpoint(run_dir / LAST_CHECKPOINT)
        # the run's own settings, with this command's overrides (e.g. more EPOCHS) on top
        cfg = load_config(overrides, base=vars(config_from_dict(checkpoint["config"])))
    # read the data first, so that a missing or empty split leaves no empty run folder behind
    train_records = slice_records(read_split_slices(work_dir, "train", cfg))
    if not train_records:
        raise ValueError(f"{work_dir / cfg.SPLIT_SLICES_CSV.format(split='train')}: no labelled B-scans to train "
                         f"on; check the split")
    val_records = slice_records(read_split_slices(work_dir, "val", cfg))
    runtime = select_runtime(cfg)
    run_dir = _shared_run_dir(run_dir, runs_dir, runtime)
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if runtime.distributed:
        dist.barrier()
    _setup_logging(run_dir, runtime.is_main)
    _seed_everything(cfg.SEED + runtime.rank)
    workers = loader_workers(cfg, runtime.device.type, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if runtime.device.type == "cpu" and workers > 0:
        torch.set_num_threads(max(1, torch.get_num_threads() - workers))  # leave the workers their cores

    if not val_records:
        log.info("note: the split has no val cases; no validation, and best.pt is the last epoch")
    reference = checkpoint.get("histogram_reference") if checkpoint else _histogram_reference(work_dir, cfg)

    model_args = unet_arguments(cfg)
    model = build_unet(model_args).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.LEARNING_RATE, betas=tuple(cfg.ADAM_BETAS))
    adversary = None
    if cfg.ADVERSARIAL:
        discriminator = Discriminator(cfg.N_CLASSES).to(runtime.device)
        adversary = Adversary(discriminator, torch.optim.Adam(discriminator.parameters(),
                                                              lr=cfg.DISCRIMINATOR_LEARNING_RATE,
                                                              betas=tuple(cfg.ADAM_BETAS)), cfg.ADVERSARIAL_WEIGHT)
    start_epoch, best_score = 0, -math.inf
    if checkpoint:
        model.load_state_dict(checkpoint["model_state"])
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        if adversary and checkpoint.get("discriminator_state"):
            adversary.discriminator.load_state_dict(checkpoint["discriminator_state"])
            adversary.optimizer.load_state_dict(checkpoint["discriminator_optimizer_state"])
        start_epoch, best_score = checkpoint["epoch"], checkpoint.get("best_score", -math.inf)
        log.info(f"resuming {run_dir} after epoch {start_epoch}")
    network = DistributedDataParallel(model, device_ids=[runtime.local_rank] if runtime.device.type == "cuda"
                                      else None) if runtime.distributed else model
    loss_fn = balanced_ce_dice_loss(cfg.CE_WEIGHT, cfg.DICE_WEIGHT)
    if runtime.is_main:
        save_config(cfg, run_dir / "config.json")
    log.info(f"{len(train_records)} training and {len(val_records)} validation B-scans; {cfg.ENCODER} U-Net on "
             f"{runtime.device} ({runtime.autocast_dtype or 'fp32'}, {runtime.world_size} process(es)); "
             f"run folder {run_dir}")

    batches = iter(training_loader(train_records, work_dir, cfg, cfg.SEED, runtime.rank, start_epoch, workers))
    val_batches = validation_batches(val_records, work_dir, cfg, seed=cfg.SEED) if val_records else []
    for epoch in range(start_epoch + 1, cfg.EPOCHS + 1):
        timer = EpochTimer()
        train_loss = train_epoch(network, batches, cfg.BATCHES_PER_EPOCH, optimizer, loss_fn, runtime, adversary,
                                 description=f"epoch {epoch}/{cfg.EPOCHS}")
        metrics = validate(network, val_batches, loss_fn, runtime, cfg.N_CLASSES, cfg.FLUIDS) if val_batches \
            else {}
        row = {"epoch": epoch, "train_loss": train_loss, **metrics, "seconds": round(timer.seconds, 1)}
        score = score_of(metrics) if val_batches else math.inf
        improved = score > best_score or not val_batches or epoch == 1
        best_score = max(best_score, score)
        log.info(f"epoch {epoch}: train loss {train_loss:.4f}" + (
            f", val loss {metrics['val_loss']:.4f}, Dice IRF {metrics['dice_IRF']:.3f} SRF {metrics['dice_SRF']:.3f}"
            f" PED {metrics['dice_PED']:.3f} mean {metrics['dice_mean_fluid']:.3f}" if metrics else "")
            + f" ({timer.seconds:.0f} s){' *' if improved and val_batches else ''}")
        if runtime.is_main:
            plot_curves(append_log(run_dir, row), run_dir / CURVES_PNG)
            state = {"model_args": model_args, "model_state": {k: v.cpu() for k, v in model.state_dict().items()},
                     "optimizer_state": optimizer.state_dict(), "epoch": epoch, "config": config_to_dict(cfg),
                     "metrics": {k: float(v) for k, v in row.items()}, "best_score": best_score,
                     "histogram_reference": reference}
            if adversary:
                state["discriminator_state"] = adversary.discriminator.state_dict()
                state["discriminator_optimizer_state"] = adversary.optimizer.state_dict()
            if improved:
                save_checkpoint(run_dir / BEST_CHECKPOINT, state)
            save_checkpoint(run_dir / LAST_CHECKPOINT, state)
    if runtime.distributed:
        dist.barrier()
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run_dir = run(args)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    log.info(f"done: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
