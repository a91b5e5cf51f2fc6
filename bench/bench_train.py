"""Training throughput: patches per second of the model step of each network, of the data pipeline alone, and of
both together.

    python bench/bench_train.py [--models rmit_unet,smp_unet] [--encoders resnet18] [--batches 10]
                                [--work-dir DIR | --no-pipeline] [--device auto] [--set NAME=VALUE]

**Model step** (forward + loss + backward + optimiser step: ``utils.train.loop.train_step``, which train.py runs, with
train.py's network, ``OPTIMIZER``, ``LOSS`` and rmit_unet's L2 on conv kernels; targets centre-cropped to an unpadded
network's output) on random batches of ``BATCH_SIZE`` patches of ``PATCH_SHAPE``, for each of ``--models`` (smp_unet
once per ``--encoders`` entry), in bf16 autocast (where the device supports it) and in fp32, both with
``CHANNELS_LAST``. Each row gives patches/s and the achieved GFLOP/s (FLOPs of one step counted with
``torch.utils.flop_counter``) as a share of the bf16 and fp32 ``torch.matmul`` peaks measured in the same run
(``bench/flops.py``).

**Pipeline**: without ``--work-dir``, a full-size synthetic set (one case per vendor) is generated and prepared in a
temporary folder first; ``--no-pipeline`` skips it. The pipeline is timed alone and feeding the model step of the
configured ``MODEL`` with each ``--loader-workers`` value. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare_data  # noqa: E402
from flops import (count_flops, device_name, matmul_peaks, peak_shares, precision_name,  # noqa: E402
                   precision_overrides)
from report_tables import records_table  # noqa: E402
from utils.configuration import ConfigError, add_config_arguments, load_config  # noqa: E402
from utils.model.networks import MODELS, NetworkSettings, network_label, unet_arguments  # noqa: E402
from utils.model.runtime import RuntimeSettings, select_runtime, training_runtime  # noqa: E402
from utils.synthetic import generate_dataset  # noqa: E402
from utils.train.data_pipeline import (TrainingDataSettings, loader_workers, read_split_slices,  # noqa: E402
                                       slice_records, training_batches, training_loader)
from utils.train.loop import new_segmenter, train_step  # noqa: E402
from utils.train.losses import LossSettings, make_loss  # noqa: E402
from utils.train.optimizers import OptimizerSettings, make_optimizer, weight_penalty  # noqa: E402


def prepared_synthetic(folder: Path) -> Path:
    generate_dataset(folder / "data", cases_per_vendor=1, seed=11)
    status = prepare_data.main(["--data-root", str(folder / "data"), "--work-dir", str(folder / "work"),
                                "--set", "SPLIT_FRACTIONS={'train': 1.0, 'val': 0.0, 'test': 0.0}"])
    if status:
        raise SystemExit("preparing the synthetic set failed")
    return folder / "work"


def time_pipeline(records, work_dir, cfg, n_batches: int) -> float:
    """Patches per second of the in-process pipeline."""
    batches = training_batches(records, work_dir, TrainingDataSettings.from_config(cfg), seed=0)
    next(batches)  # warm-up (file cache, first imports)
    start = time.perf_counter()
    for _ in range(n_batches):
        next(batches)
    return n_batches * cfg.BATCH_SIZE / (time.perf_counter() - start)


class ModelStep:
    """One training step of a freshly initialised network as train.py takes it (``utils.train.loop.train_step``):
    train.py's network, optimiser, loss and weight penalty, built by the same functions; no adversary, learning-rate
    schedule or moving average."""

    def __init__(self, cfg, runtime):
        torch.manual_seed(0)
        self.runtime = runtime
        self.model = new_segmenter(unet_arguments(NetworkSettings.from_config(cfg)), runtime)
        self.model.train()
        self.optimizer = make_optimizer(self.model, OptimizerSettings.from_config(cfg))
        self.loss_fn = make_loss(LossSettings.from_config(cfg))
        self.penalty = weight_penalty(cfg.MODEL, cfg.L2_WEIGHT)

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        train_step(self.model, (images, masks), self.optimizer, self.loss_fn, self.runtime,
                   regulariser=lambda: self.penalty(self.model))


def time_model(cfg, runtime, n_batches: int) -> tuple[float, float]:
    """Patches per second of the model step on a random batch, and the step's FLOPs per patch.

    The FLOPs are counted during the first of two warm-up steps; ``n_batches`` steps are timed after them.
    """
    step = ModelStep(cfg, runtime)
    images = torch.rand(cfg.BATCH_SIZE, 3, *cfg.PATCH_SHAPE) * 2 - 1
    masks = torch.randint(0, cfg.N_CLASSES, (cfg.BATCH_SIZE, *cfg.PATCH_SHAPE))
    flops = count_flops(lambda: step(images, masks))
    step(images, masks)
    _synchronise(runtime)
    start = time.perf_counter()
    for _ in range(n_batches):
        step(images, masks)
    _synchronise(runtime)
    return n_batches * cfg.BATCH_SIZE / (time.perf_counter() - start), flops / cfg.BATCH_SIZE


def _synchronise(runtime) -> None:
    if runtime.device.type == "cuda":
        torch.cuda.synchronize()


def time_together(records, work_dir, cfg, runtime, n_batches: int) -> float:
    """Patches per second of the real loop: DataLoader (LOADER_WORKERS processes) feeding model steps."""
    step = ModelStep(cfg, runtime)
    threads = torch.get_num_threads()
    workers = loader_workers(cfg.LOADER_WORKERS, runtime.device.type)
    if runtime.device.type == "cpu" and workers > 0:
        torch.set_num_threads(max(1, threads - workers))  # as train.py does
    batches = iter(training_loader(records, work_dir, TrainingDataSettings.from_config(cfg), seed=0,
                                   workers=workers))
    for _ in range(2):
        step(*next(batches))
    _synchronise(runtime)
    start = time.perf_counter()
    for _ in range(n_batches):
        step(*next(batches))
    _synchronise(runtime)
    torch.set_num_threads(threads)
    return n_batches * cfg.BATCH_SIZE / (time.perf_counter() - start)


def model_configs(overrides: list[str], models: list[str], encoders: list[str]) -> list[list[str]]:
    """The ``--set`` overrides of each network to time: one per model, smp_unet once per encoder."""
    variants = []
    for model in models:
        for encoder in encoders if MODELS[model].takes_encoder else [None]:
            variants.append(overrides + [f"MODEL={model}"] + ([f"ENCODER={encoder}"] if encoder else []))
    return variants


def model_step_rows(variants: list[list[str]], peaks: dict[str, float], n_batches: int):
    """Yields one table row per network and precision (bf16 where the device has it, even where it runs slower than
    fp32 and train.py would not use it: BF16_WHEREVER_AVAILABLE; then fp32)."""
    for overrides in variants:
        for mixed in (True, False):
            cfg = load_config(overrides + precision_overrides(mixed))
            runtime = training_runtime(select_runtime(RuntimeSettings.from_config(cfg)),
                                       MODELS[cfg.MODEL].trains_faster_nchw_on_avx2)  # the layout train.py uses
            if mixed and runtime.autocast_dtype is None:
                continue
            patches_per_s, flops_per_patch = time_model(cfg, runtime, n_batches)
            gflops = patches_per_s * flops_per_patch / 1e9
            label = network_label(unet_arguments(NetworkSettings.from_config(cfg)))
            yield {"model": label, "precision": precision_name(runtime.autocast_dtype),
                   "layout": runtime.layout,
                   "patches/s": patches_per_s, "GFLOP/patch": flops_per_patch / 1e9, "GFLOP/s": gflops,
                   **peak_shares(gflops, peaks)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated MODEL values whose model "
                        "step is timed (default: %(default)s; '' skips them)")
    parser.add_argument("--encoders", default=None, help="comma-separated smp encoders for smp_unet "
                        "(default: config ENCODER)")
    parser.add_argument("--batches", type=int, default=10, help="timed batches per measurement (default: 10)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="side of torch.matmul's matrices for the peak (default: 4096 on CPU, 8192 on GPU; "
                             "oneDNN's product beside it on a CPU has a fixed size)")
    parser.add_argument("--work-dir", help="a prepared work dir for the pipeline rows (default: prepare a "
                        "synthetic one)")
    parser.add_argument("--no-pipeline", action="store_true", help="time the model step only (no data needed)")
    parser.add_argument("--loader-workers", default="0,1,-1",
                        help="LOADER_WORKERS values for the combined run (-1: the automatic choice)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    overrides = [f"DEVICE={args.device}"] + args.overrides
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown or args.batches < 1:
        parser.error(f"--models takes {', '.join(MODELS)} (got {args.models!r}); --batches must be >= 1")
    try:
        cfg = load_config(overrides)
        encoders = args.encoders.split(",") if args.encoders else [cfg.ENCODER]
        variants = model_configs(overrides, models, encoders)
        for variant in variants:
            make_loss(LossSettings.from_config(load_config(variant)))
        runtime = training_runtime(select_runtime(RuntimeSettings.from_config(cfg)),
                                   MODELS[cfg.MODEL].trains_faster_nchw_on_avx2)  # the pipeline rows' model step
    except ConfigError as error:
        parser.error(str(error))
    if variants:
        peak_settings = RuntimeSettings.from_config(load_config(overrides + precision_overrides(True)))
        peaks = matmul_peaks(select_runtime(peak_settings), args.matmul_size)
        print(f"\nmodel step: batch {cfg.BATCH_SIZE} x {tuple(cfg.PATCH_SHAPE)} patches, {runtime.device} "
              f"({device_name(runtime.device)}), CHANNELS_LAST {cfg.CHANNELS_LAST}; matmul peak "
              + ", ".join(f"{name} {peak:.0f} GFLOP/s" for name, peak in peaks.items())
              + f"; train.py trains in {precision_name(runtime.autocast_dtype)}"
              + (f" ({runtime.note})" if runtime.note else "") + "\n")
        print(records_table(model_step_rows(variants, peaks, args.batches)), flush=True)
    if args.no_pipeline:
        return

    with tempfile.TemporaryDirectory() as tmp:
        work_dir = Path(args.work_dir) if args.work_dir else prepared_synthetic(Path(tmp))
        records = slice_records(read_split_slices(work_dir, "train", cfg.SPLIT_SLICES_CSV, cfg.FLUIDS), cfg.FLUIDS)
        precision = precision_name(runtime.autocast_dtype)
        label = network_label(unet_arguments(NetworkSettings.from_config(cfg)))
        print(f"\npipeline: {len(records)} training B-scans, {label} model step, {precision}, {runtime.layout}\n")
        print("| stage | model | precision | loader workers | patches/s |")
        print("|---|---|---|---|---|")
        print(f"| data pipeline alone | - | - | 0 | {time_pipeline(records, work_dir, cfg, args.batches):.1f} |")
        for workers in (int(w) for w in args.loader_workers.split(",")):
            loop_cfg = load_config(overrides + [f"LOADER_WORKERS={workers}"])
            shown = f"auto = {loader_workers(loop_cfg.LOADER_WORKERS, runtime.device.type)}" if workers < 0 else workers
            print(f"| pipeline + model step | {label} | {precision} | {shown} | "
                  f"{time_together(records, work_dir, loop_cfg, runtime, args.batches):.1f} |", flush=True)


if __name__ == "__main__":
    main()
