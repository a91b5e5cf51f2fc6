"""Times the networks on whole B-scans as predict.py runs them, predict.py's work per volume on vendor-size
volumes, and its per-case path on several volumes with and without reading ahead, and compares the networks'
speed with a matmul peak.

    python bench/bench_predict.py [--models rmit_unet,smp_unet] [--regions band,all] [--batches 5]
                                  [--device auto|cpu|cuda] [--vendors Cirrus,Topcon] [--bscans N] [--many 3]
                                  [--set NAME=VALUE]

**Networks**: for each of ``--models`` (freshly initialised, no weights downloaded; smp_unet with ``ENCODER``; in
eval mode with the batch norms folded into their convs, as predict.py runs them), in
bf16 autocast (where the device supports it) and in fp32, both with ``CHANNELS_LAST``, ``--batches`` batches of
``INFERENCE_BATCH_SIZE`` random ``(n, H, W, 3)`` uint8 B-scans go through
:func:`utils.predict.inference.network_probabilities` (padding, normalisation, forward pass, softmax, crop) after
a warm-up batch, for each ``--regions`` entry: ``band``, the ``PATCH_SHAPE[0]``-row band x 512 columns that
``PREDICT_REGION = "band"`` segments, and ``all``, a whole 496 x 512 Spectralis B-scan. B-scans/s and ms per
B-scan are of the whole call; GFLOP/s is of the forward passes alone.

**Volumes**: for each vendor a noise volume of the vendor's usual size, type and spacing is written to a temporary
folder and put through predict.py's steps, each timed: read, preprocess (:func:`utils.predict.segment.prepare_volume`:
intensity, histogram matching, medians and the B-scans' ROIs for the test-time band), predict
(:func:`utils.predict.segment.segment_volume`: the network in batches, labels, presence scores, post-processing),
write, with the network of the config (``MODEL``); ``--vendors ''`` skips them, ``--bscans`` limits the B-scans per
volume for a quick run. "end-to-end / forward" is the volume's total time over the time of its forward passes alone
(1 would be a network that never waits).

**Many volumes**: ``--many`` noise volumes per vendor (0 skips them) are written as
``<folder>/<vendor>/CASE<k>/oct.mhd`` and segmented by predict.py's per-case path twice, into separate folders:
*one at a time* (:func:`utils.predict.segment.load_case`, then :func:`utils.predict.segment.predict_case`, case
after case) and *read ahead* (:func:`utils.predict.segment.segment_cases`, which reads and preprocesses the next
case in a background thread while the network segments the current one), after a warm-up of the network on each
vendor's input shapes. Per mode: volumes/hour, seconds per volume end-to-end and in the forward passes alone
(averages over all vendors' volumes), their ratio (issue 11 aims at <= 1.1) and the speed-up over one at a time.
``segment_cases``' per-case lines go to stderr with the progress bars.

The networks' FLOPs are counted for every input shape they were called with (``torch.utils.flop_counter``), so
the achieved GFLOP/s is exact, and set against the best time of a large matrix multiply in bf16 and in fp32 on the
same device in the same run (``bench/flops.py``). Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from flops import (device_name, forward_flops, matmul_peaks, peak_shares, precision_name,  # noqa: E402
                   precision_overrides, synchronize)
from report_tables import records_table  # noqa: E402
from utils.predict import inference  # noqa: E402
from utils.predict.band import PREDICT_REGIONS  # noqa: E402
from utils.configuration import DEVICES, ConfigError, add_config_arguments, load_config  # noqa: E402
from utils.io.cases import Case  # noqa: E402
from utils.io.mhd_io import Geometry, read_volume, write_volume  # noqa: E402
from utils.model.networks import (MODELS, NetworkSettings, build_unet, network_label, output_margin,  # noqa: E402
                                  unet_arguments)
from utils.predict.markers import run_identity  # noqa: E402
from utils.predict.outputs import Outputs  # noqa: E402
from utils.predict.predictor import inference_model  # noqa: E402
from utils.predict.settings import InferenceSettings, PredictSettings  # noqa: E402
from utils.predict.segment import (load_case, predict_case, prepare_volume, segment_cases,  # noqa: E402
                                   segment_volume)
from utils.prepare.preprocessing import intensity_histogram, to_uint8_intensity  # noqa: E402
from utils.model.runtime import Runtime, RuntimeSettings, select_runtime  # noqa: E402

# The vendors' usual RETOUCH volumes: (z, y, x), dtype, spacing (x, y, z) mm. Benchmark inputs only: predict.py
# reads every spacing from the header.
VOLUMES = {
    "Cirrus": ((128, 1024, 512), np.uint8, (0.01171875, 0.001953125, 0.046875)),
    "Spectralis": ((49, 496, 512), np.uint16, (0.0114, 0.003872, 0.1216)),
    "Topcon": ((128, 885, 512), np.uint8, (0.011719, 0.0026, 0.046875)),
}


class CountingModel(nn.Module):
    """The model, recording the input shape and the (device-synchronised) time of every forward pass."""

    def __init__(self, model: nn.Module, device: torch.device):
        super().__init__()
        self.model, self.device = model, device
        self.calls: collections.Counter = collections.Counter()
        self.seconds = 0.0

    @property
    def encoder(self) -> nn.Module:  # utils.predict.tiling.input_multiple reads the encoder's output stride
        return self.model.encoder

    @property
    def margin(self) -> int:  # utils.model.networks.output_margin: how an unpadded network's input is padded
        return output_margin(self.model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        synchronize(self.device)
        start = time.perf_counter()
        out = self.model(images)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls[tuple(images.shape)] += 1
        return out

    def reset(self) -> None:
        self.calls.clear()
        self.seconds = 0.0


def noise_volume(vendor: str, n_bscans: int | None, rng: np.random.Generator) -> tuple[np.ndarray, Geometry]:
    """Uniform noise of the vendor's size (first ``n_bscans`` B-scans) and type, with its spacing."""
    shape, dtype, spacing = VOLUMES[vendor]
    shape = (min(n_bscans or shape[0], shape[0]),) + shape[1:]
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True), Geometry(spacing_mm=spacing)


def bench_vendor(vendor: str, model: CountingModel, cfg, runtime: Runtime, folder: Path,
                 reference_counts: np.ndarray, n_bscans: int | None, rng: np.random.Generator) -> dict:
    """Times one volume's read, preprocess, predict and write (batches of ``cfg.INFERENCE_BATCH_SIZE``); returns the
    table row."""
    volume, geometry = noise_volume(vendor, n_bscans, rng)
    path = folder / vendor / "oct.mhd"
    write_volume(path, volume, geometry)
    times = {}
    start = time.perf_counter()
    volume, geometry = read_volume(path)
    times["read"] = time.perf_counter() - start
    start = time.perf_counter()
    settings = PredictSettings.from_config(cfg)
    loaded = prepare_volume(volume, geometry, vendor, settings, reference_counts, str(path))
    times["preprocess"] = time.perf_counter() - start
    # warm-up at this input size (oneDNN / cuDNN choose their kernels on the first call of a shape)
    batch_size = cfg.INFERENCE_BATCH_SIZE
    inference.predict_volume(model, loaded.prepared[:min(batch_size, len(loaded.prepared))], geometry,
                             InferenceSettings.from_config(cfg), runtime, batch_size)
    model.reset()
    synchronize(runtime.device)
    start = time.perf_counter()
    result = segment_volume(model, loaded, settings, runtime)
    synchronize(runtime.device)
    times["predict"] = time.perf_counter() - start
    start = time.perf_counter()
    write_volume(folder / vendor / "segmentation.mhd", result.labels, geometry)
    times["write"] = time.perf_counter() - start
    flops = sum(forward_flops(model.model, shape, runtime) * count for shape, count in model.calls.items())
    total = sum(times.values())
    shapes = sorted({shape[2:] for shape in model.calls})
    return {"vendor": vendor, "volume": "x".join(map(str, volume.shape)), "dtype": str(volume.dtype),
            "net input": ", ".join(f"{h}x{w}" for h, w in shapes), **{f"{k} s": v for k, v in times.items()},
            "total s": total, "B-scans/s": len(volume) / total, "predict B-scans/s": len(volume) / times["predict"],
            "forward s": model.seconds, "end-to-end / forward": total / model.seconds,
            "GFLOP/B-scan": flops / len(volume) / 1e9, "GFLOP/s": flops / model.seconds / 1e9}


def write_noise_cases(vendors: list[str], count: int, n_bscans: int | None, folder: Path,
                      rng: np.random.Generator) -> list[Case]:
    """Writes ``count`` noise volumes per vendor (:func:`noise_volume`) as ``folder/<vendor>/CASE<k>/oct.mhd``,
    k = 1..count; returns their cases (no reference), vendor by vendor."""
    cases = []
    for vendor in vendors:
        for k in range(1, count + 1):
            path = folder / vendor / f"CASE{k}" / "oct.mhd"
            write_volume(path, *noise_volume(vendor, n_bscans, rng))
            cases.append(Case(f"{vendor}_CASE{k}", vendor, path, None))
    return cases


def warm_up(model: CountingModel, cases: list[Case], cfg, runtime: Runtime, reference_counts: np.ndarray) -> None:
    """Runs the network on the first case of each vendor: one full batch and the last, partial one
    (oneDNN / cuDNN pick their kernels on the first call of each input shape), then resets the counts."""
    batch_size = cfg.INFERENCE_BATCH_SIZE
    first_case_per_vendor = {}
    for case in cases:
        first_case_per_vendor.setdefault(case.vendor, case)
    for case in first_case_per_vendor.values():
        loaded = load_case(case, PredictSettings.from_config(cfg), reference_counts)
        n_bscans = len(loaded.prepared)
        for batch_bscans in {min(batch_size, n_bscans), n_bscans % batch_size} - {0}:
            inference.predict_volume(model, loaded.prepared[:batch_bscans], loaded.geometry,
                                     InferenceSettings.from_config(cfg), runtime, batch_size)
    model.reset()


def segment_one_at_a_time(cases: list[Case], model: CountingModel, cfg, runtime: Runtime,
                          reference_counts: np.ndarray, out_dir: Path, identity: dict) -> None:
    """predict.py's per-case path without reading ahead: :func:`load_case` then :func:`predict_case`, case by
    case, outputs in ``out_dir/<case name>``."""
    settings = PredictSettings.from_config(cfg)
    for case in cases:
        loaded = load_case(case, settings, reference_counts)
        predict_case(case, model, settings, runtime, loaded, out_dir / case.name, identity, Outputs())


def segment_reading_ahead(cases: list[Case], model: CountingModel, cfg, runtime: Runtime,
                          reference_counts: np.ndarray, out_dir: Path, identity: dict) -> None:
    """:func:`segment_cases` on all ``cases`` (the next case read in a background thread), outputs in
    ``out_dir/<case name>``; its per-case lines go to stderr.

    Raises:
        SystemExit: a case failed or was skipped (``out_dir`` must hold no earlier results).
    """
    with contextlib.redirect_stdout(sys.stderr):
        segmented, _, failed = segment_cases(cases, model, PredictSettings.from_config(cfg), runtime,
                                             reference_counts, out_dir, identity, Outputs())
    if segmented != len(cases):
        raise SystemExit(f"segment_cases segmented {segmented} of {len(cases)} noise volumes; failed: "
                         f"{', '.join(failed) or 'none'}")


def bench_many(cases: list[Case], model: CountingModel, cfg, runtime: Runtime, reference_counts: np.ndarray,
               folder: Path) -> list[dict]:
    """Times :func:`segment_one_at_a_time` and then :func:`segment_reading_ahead` on the same cases (after
    :func:`warm_up`), outputs in ``folder/one_at_a_time`` and ``folder/read_ahead``; returns the table rows.

    Seconds per volume and forward seconds per volume are means over ``cases``; "speed-up" is the mode's
    volumes/hour over that of one at a time.
    """
    weights = folder / "bench_predict.pt"  # no checkpoint to segment with: the fresh network's weights stand for one
    torch.save(model.model.state_dict(), weights)
    identity = run_identity(weights, {"epoch": 0}, PredictSettings.from_config(cfg))
    warm_up(model, cases, cfg, runtime, reference_counts)
    modes = {"one at a time (load_case, predict_case)": (segment_one_at_a_time, folder / "one_at_a_time"),
             "read ahead (segment_cases)": (segment_reading_ahead, folder / "read_ahead")}
    rows = []
    for mode, (segment, out_dir) in modes.items():
        model.reset()
        synchronize(runtime.device)
        start = time.perf_counter()
        segment(cases, model, cfg, runtime, reference_counts, out_dir, identity)
        synchronize(runtime.device)
        seconds = time.perf_counter() - start
        print(f"{mode}: {seconds:.1f} s", file=sys.stderr)
        rows.append({"mode": mode, "volumes": len(cases), "volumes/hour": 3600 * len(cases) / seconds,
                     "s/volume": seconds / len(cases), "forward s/volume": model.seconds / len(cases),
                     "end-to-end / forward": seconds / model.seconds})
    for row in rows:
        row["speed-up"] = row["volumes/hour"] / rows[0]["volumes/hour"]
    return rows


def region_shape(region: str, cfg) -> tuple[int, int]:
    """``(H, W)`` of the depth-scaled B-scans the network sees for ``PREDICT_REGION`` ``region`` on a Spectralis
    B-scan: the ``PATCH_SHAPE[0]``-row band (``band``, ``roi``: the ROI restriction is applied after the network)
    or the whole B-scan (``all``), 512 columns."""
    height, width = VOLUMES["Spectralis"][0][1:]
    return (min(int(cfg.PATCH_SHAPE[0]), height), width) if region in ("band", "roi") else (height, width)


def bench_runtime(cfg, device: str | None) -> Runtime:
    """The runtime of the config (:func:`utils.model.runtime.select_runtime`), on ``device`` (``--device``, one of
    ``DEVICES``, checked by argparse) instead of ``DEVICE`` when given."""
    settings = RuntimeSettings.from_config(cfg)
    return select_runtime(dataclasses.replace(settings, device=device) if device else settings)


def counting_network(cfg, runtime: Runtime) -> CountingModel:
    """A freshly initialised network of the config as predict.py runs it
    (:func:`utils.predict.predictor.inference_model`: eval mode, batch norms folded, the runtime's device and
    layout), counted."""
    torch.manual_seed(cfg.SEED)
    model_args = unet_arguments(NetworkSettings.from_config(cfg))
    fresh = {"model_args": model_args, "model_state": build_unet(model_args).state_dict()}
    return CountingModel(inference_model(fresh, runtime), runtime.device)


@torch.inference_mode()
def bench_network(model: CountingModel, cfg, runtime: Runtime, region: str, batch_size: int, n_batches: int,
                  peaks: dict[str, float], rng: np.random.Generator) -> dict:
    """Times ``n_batches`` calls of :func:`utils.predict.inference.network_probabilities` on ``batch_size`` random
    B-scans of the region's shape (after one warm-up call); returns the table row."""
    height, width = region_shape(region, cfg)
    images = rng.integers(0, 256, (batch_size, height, width, 3), dtype=np.uint8)
    settings = InferenceSettings.from_config(cfg)
    inference.network_probabilities(model, images, settings, runtime)  # warm-up: oneDNN / cuDNN pick their kernels
    model.reset()
    synchronize(runtime.device)
    start = time.perf_counter()
    for _ in range(n_batches):
        inference.network_probabilities(model, images, settings, runtime)
    synchronize(runtime.device)
    seconds = time.perf_counter() - start
    n_bscans = n_batches * batch_size
    flops = sum(forward_flops(model.model, shape, runtime) * count for shape, count in model.calls.items())
    gflops = flops / model.seconds / 1e9
    shapes = sorted({shape[2:] for shape in model.calls})
    label = network_label(unet_arguments(NetworkSettings.from_config(cfg)))
    return {"model": label, "precision": precision_name(runtime.autocast_dtype), "region": region,
            "B-scan": f"{height}x{width}", "net input": ", ".join(f"{h}x{w}" for h, w in shapes),
            "B-scans/s": n_bscans / seconds, "ms/B-scan": 1000 * seconds / n_bscans,
            "GFLOP/B-scan": flops / n_bscans / 1e9, "forward share": model.seconds / seconds, "GFLOP/s": gflops,
            **peak_shares(gflops, peaks)}


def network_rows(args, batch_size: int, peaks: dict[str, float], rng: np.random.Generator):
    """Yields a row per model, precision (bf16 where the device has it, even where it runs slower than fp32 and
    predict.py would not use it: BF16_WHEREVER_AVAILABLE; then fp32) and region."""
    for name in args.models:
        for mixed in (True, False):
            cfg = load_config(args.overrides + [f"MODEL={name}", *precision_overrides(mixed)])
            runtime = bench_runtime(cfg, args.device)
            if mixed and runtime.autocast_dtype is None:
                continue
            model = counting_network(cfg, runtime)
            for region in args.regions:
                row = bench_network(model, cfg, runtime, region, batch_size, args.batches, peaks, rng)
                print(f"{row['model']} {row['precision']} {region}: {row['ms/B-scan']:.0f} ms/B-scan",
                      file=sys.stderr)
                yield row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, choices=DEVICES, help="default: config DEVICE")
    parser.add_argument("--models", default=",".join(MODELS), help="networks timed on B-scans, comma-separated "
                        "(default: %(default)s; '' skips them)")
    parser.add_argument("--regions", default="band,all", help="PREDICT_REGION values whose network input is timed "
                        "(default: %(default)s)")
    parser.add_argument("--batches", type=int, default=5, help="timed batches per network row (default: 5)")
    parser.add_argument("--vendors", default=",".join(VOLUMES), help="volumes timed, comma-separated "
                        "(default: %(default)s; '' skips them)")
    parser.add_argument("--bscans", type=int, default=None, help="B-scans per volume (default: the vendor's)")
    parser.add_argument("--many", type=int, default=3, help="noise volumes per vendor segmented one at a time and "
                        "with read-ahead (default: %(default)s; 0 skips them)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: config INFERENCE_BATCH_SIZE")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="side of torch.matmul's matrices for the peak (default: 4096 on CPU, 8192 on GPU; "
                             "oneDNN's product beside it on a CPU has a fixed size)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.regions = [r for r in args.regions.split(",") if r]
    vendors = [v for v in args.vendors.split(",") if v]
    if [m for m in args.models if m not in MODELS] or [r for r in args.regions if r not in PREDICT_REGIONS]:
        parser.error(f"--models takes {', '.join(MODELS)}; --regions takes {', '.join(PREDICT_REGIONS)}")
    unknown = [v for v in vendors if v not in VOLUMES]
    if (unknown or (args.bscans is not None and args.bscans < 1) or args.batches < 1 or args.many < 0
            or (args.batch_size is not None and args.batch_size < 1)):
        parser.error(f"--vendors takes {', '.join(VOLUMES)}; --bscans, --batches and --batch-size must be >= 1, "
                     f"--many >= 0")
    try:
        cfg = load_config(args.overrides)
        runtime = bench_runtime(cfg, args.device)
        peak_runtime = bench_runtime(load_config(args.overrides + precision_overrides(True)), args.device)
        for name in args.models:
            unet_arguments(NetworkSettings.from_config(load_config(args.overrides + [f"MODEL={name}"])))
    except ConfigError as error:
        parser.error(str(error))
    batch_size = args.batch_size or cfg.INFERENCE_BATCH_SIZE
    # predict.py's steps batch by the config: make it the batch of the network rows
    cfg = load_config(args.overrides + [f"INFERENCE_BATCH_SIZE={batch_size}"])
    peaks = matmul_peaks(peak_runtime, args.matmul_size)
    rng = np.random.default_rng(cfg.SEED)
    print(f"\n{runtime.device} ({device_name(runtime.device)}), channels_last {runtime.channels_last}, batch "
          f"{batch_size}; matmul peak " + ", ".join(f"{name} {peak:.0f} GFLOP/s" for name, peak in peaks.items()))
    if args.models:
        print("\nNetworks on whole B-scans (utils.predict.inference.network_probabilities):\n")
        print(records_table(network_rows(args, batch_size, peaks, rng)), flush=True)
    if not vendors:
        return 0

    model = counting_network(cfg, runtime)
    label = network_label(unet_arguments(NetworkSettings.from_config(cfg)))
    reference_counts = intensity_histogram(to_uint8_intensity(noise_volume("Spectralis", 4, rng)[0]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as folder:
        for vendor in vendors:
            row = bench_vendor(vendor, model, cfg, runtime, Path(folder), reference_counts, args.bscans, rng)
            rows.append({**row, **peak_shares(row["GFLOP/s"], peaks)})
            print(f"{vendor}: {rows[-1]['total s']:.1f} s", file=sys.stderr)
    print(f"\nVolumes through predict.py's steps: {label}, "
          f"{precision_name(runtime.autocast_dtype)}, PREDICT_REGION {cfg.PREDICT_REGION}\n")
    print(records_table(rows), flush=True)
    if not args.many:
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_predict_many_") as folder:
        cases = write_noise_cases(vendors, args.many, args.bscans, Path(folder), rng)
        many_rows = bench_many(cases, model, cfg, runtime, reference_counts, Path(folder))
    print(f"\nMany volumes ({args.many} per vendor: {', '.join(vendors)}) through predict.py's per-case path: "
          f"{label}, {precision_name(runtime.autocast_dtype)}, "
          f"PREDICT_REGION {cfg.PREDICT_REGION}\n")
    print(records_table(many_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
