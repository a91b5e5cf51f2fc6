"""Training throughput: patches per second of the data pipeline alone, the model step alone, and both together.

    python bench/bench_train.py [--work-dir DIR] [--encoders resnet18,resnet34] [--batches 20] [--device auto]

Without --work-dir, a full-size synthetic set (one case per vendor) is generated and prepared in a temporary folder
first. The model step is timed in fp32 and, where the device supports it, in mixed precision (bf16 autocast on
a bf16-capable CPU), with channels_last. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prepare_data  # noqa: E402
from utils.configuration import load_config  # noqa: E402
from utils.train.data_pipeline import (loader_workers, read_split_slices, slice_records,  # noqa: E402
                                 training_batches, training_loader)
from utils.train.losses import balanced_ce_dice_loss  # noqa: E402
from utils.model.networks import build_unet, unet_arguments  # noqa: E402
from utils.model.runtime import select_runtime  # noqa: E402
from utils.synthetic import generate_dataset  # noqa: E402


def prepared_synthetic(folder: Path) -> Path:
    generate_dataset(folder / "data", cases_per_vendor=1, seed=11)
    status = prepare_data.main(["--data-root", str(folder / "data"), "--work-dir", str(folder / "work"),
                                "--set", "SPLIT_FRACTIONS={'train': 1.0, 'val': 0.0, 'test': 0.0}"])
    if status:
        raise SystemExit("preparing the synthetic set failed")
    return folder / "work"


def time_pipeline(records, work_dir, cfg, n_batches: int) -> float:
    """Patches per second of the in-process pipeline."""
    batches = training_batches(records, work_dir, cfg, seed=0)
    next(batches)  # warm-up (file cache, first imports)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(batches)
    return n_batches * cfg.BATCH_SIZE / (time.perf_counter() - start)


def model_step(model, optimizer, loss_fn, runtime, images, masks) -> None:
    images, masks = runtime.to_device(images), masks.to(runtime.device)
    with runtime.autocast():
        logits = model(images)
    loss = loss_fn(logits.float(), masks)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _synchronise(runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()


def fresh_model(cfg, runtime):
    """A newly initialised U-Net on the runtime's device and layout, its Adam optimiser, and the method's loss."""
    torch.manual_seed(0)
    model = build_unet(unet_arguments(cfg)).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), lr=cfg.LEARNING_RATE), balanced_ce_dice_loss()


def time_model(cfg, runtime, n_batches: int) -> float:
    """Patches per second of forward + backward + Adam step on random batches."""
    model, optimizer, loss_fn = fresh_model(cfg, runtime)
    images = torch.rand(cfg.BATCH_SIZE, 3, *cfg.PATCH_SHAPE) * 2 - 1
    masks = torch.randint(0, cfg.N_CLASSES, (cfg.BATCH_SIZE, *cfg.PATCH_SHAPE))
    for _ in range(2):
        model_step(model, optimizer, loss_fn, runtime, images, masks)
    _synchronise(runtime)
    start = time.perf_counter()
    for _ in range(n_batches):
        model_step(model, optimizer, loss_fn, runtime, images, masks)
    _synchronise(runtime)
    return n_batches * cfg.BATCH_SIZE / (time.perf_counter() - start)


def time_together(records, work_dir, cfg, runtime, n_batches: int) -> float:
    """Patches per second of the real loop: DataLoader (LOADER_WORKERS processes) feeding model steps."""
    model, optimizer, loss_fn = fresh_model(cfg, runtime)
    threads = torch.get_num_threads()
    workers = loader_workers(cfg, runtime.device.type)
    if runtime.device.type == "cpu" and workers > 0:
        torch.set_num_threads(max(1, threads - workers))  # as train.py does
    batches = iter(training_loader(records, work_dir, cfg, seed=0, workers=workers))
    for _ in range(2):
        model_step(model, optimizer, loss_fn, runtime, *next(batches))
    _synchronise(runtime)
    start = time.perf_counter()
    for _ in range(n_batches):
        model_step(model, optimizer, loss_fn, runtime, *next(batches))
    _synchronise(runtime)
    torch.set_num_threads(threads)
    return n_batches * cfg.BATCH_SIZE / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", help="a prepared work dir (default: prepare a synthetic one)")
    parser.add_argument("--encoders", default="resnet18,resnet34", help="comma-separated smp encoders")
    parser.add_argument("--batches", type=int, default=20, help="timed batches per measurement")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--loader-workers", default="0,1,-1",
                        help="LOADER_WORKERS values for the combined run (-1: the automatic choice)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(args.work_dir) if args.work_dir else prepared_synthetic(Path(tmp))
        cfg = load_config([f"DEVICE={args.device}"])
        records = slice_records(read_split_slices(work_dir, "train", cfg), cfg.FLUIDS)
        print(f"\nbatch {cfg.BATCH_SIZE} x {cfg.PATCH_SHAPE} patches, {torch.get_num_threads()} torch threads, "
              f"{len(records)} training B-scans\n")
        pipeline = time_pipeline(records, work_dir, cfg, args.batches)
        print("| stage | encoder | precision | loader workers | patches/s |")
        print("|---|---|---|---|---|")
        print(f"| data pipeline alone | - | - | 0 | {pipeline:.1f} |")
        for encoder in args.encoders.split(","):
            for mixed in (False, True):
                enc_cfg = load_config([f"DEVICE={args.device}", f"ENCODER={encoder}", f"MIXED_PRECISION={mixed}"])
                runtime = select_runtime(enc_cfg)
                if mixed and runtime.autocast_dtype is None:
                    continue
                precision = str(runtime.autocast_dtype or "fp32").replace("torch.", "")
                print(f"| model step alone | {encoder} | {precision} | - | "
                      f"{time_model(enc_cfg, runtime, args.batches):.1f} |", flush=True)
        runtime = select_runtime(cfg)
        precision = str(runtime.autocast_dtype or "fp32").replace("torch.", "")
        for workers in (int(w) for w in args.loader_workers.split(",")):
            loop_cfg = load_config([f"DEVICE={args.device}", f"LOADER_WORKERS={workers}"])
            shown = f"auto = {loader_workers(loop_cfg, runtime.device.type)}" if workers < 0 else workers
            print(f"| pipeline + model step | {cfg.ENCODER} | {precision} | {shown} | "
                  f"{time_together(records, work_dir, loop_cfg, runtime, args.batches):.1f} |", flush=True)


if __name__ == "__main__":
    main()
