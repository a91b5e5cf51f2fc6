"""Times predict.py's work per volume on vendor-size volumes and compares the network's speed with a matmul peak.

    python bench/bench_predict.py [--device auto|cpu|cuda] [--vendors Cirrus,Topcon] [--bscans N] [--set NAME=VALUE]

For each vendor a noise volume of the vendor's usual size, type and spacing is written to a temporary folder and
put through the same steps as ``predict.py`` (read, preprocess, :func:`utils.predict.inference.predict_volume`, write), with
a freshly initialised U-Net of the default config (``ENCODER``; no weights are downloaded). The network's FLOPs
are counted for every input shape it was called with (``torch.utils.flop_counter``), so the achieved GFLOP/s is
exact, and set against the best time of a large matrix multiply in the network's precision on the same device.
Prints a Markdown table; ``--bscans`` limits the B-scans per volume for a quick run.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.predict import inference  # noqa: E402
from utils.configuration import ConfigError, add_config_arguments, load_config  # noqa: E402
from utils.io.mhd_io import Geometry, read_volume, write_volume  # noqa: E402
from utils.model.networks import build_unet, unet_arguments  # noqa: E402
from utils.prepare.preprocessing import intensity_histogram, preprocess_volume, to_uint8_intensity  # noqa: E402
from utils.model.runtime import Runtime, select_runtime  # noqa: E402

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
    def encoder(self) -> nn.Module:  # utils.predict.inference.input_multiple reads the encoder's output stride
        return self.model.encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        _synchronize(self.device)
        start = time.perf_counter()
        out = self.model(images)
        _synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls[tuple(images.shape)] += 1
        return out

    def reset(self) -> None:
        self.calls.clear()
        self.seconds = 0.0


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_flops(model: nn.Module, shape: tuple[int, ...], runtime: Runtime) -> int:
    """FLOPs of one forward pass of a ``shape`` batch (a multiply-add counts 2)."""
    images = torch.zeros((1,) + tuple(shape[1:]), device=runtime.device)
    if runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(images)
    return counter.get_total_flops() * shape[0]


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matrix multiply (n = 8192 on GPU, 2048 on CPU) in ``dtype``."""
    n = 8192 if device.type == "cuda" else 2048
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=generator).to(dtype)
    b = torch.randn(n, n, device=device, generator=generator).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


def noise_volume(vendor: str, n_bscans: int | None, rng: np.random.Generator) -> tuple[np.ndarray, Geometry]:
    """Uniform noise of the vendor's size (first ``n_bscans`` B-scans) and type, with its spacing."""
    shape, dtype, spacing = VOLUMES[vendor]
    shape = (min(n_bscans or shape[0], shape[0]),) + shape[1:]
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True), Geometry(spacing_mm=spacing)


def bench_vendor(vendor: str, model: CountingModel, cfg, runtime: Runtime, batch_size: int, folder: Path,
                 reference_counts: np.ndarray, n_bscans: int | None, rng: np.random.Generator) -> dict:
    """Times one volume's read, preprocess, predict and write; returns the table row."""
    volume, geometry = noise_volume(vendor, n_bscans, rng)
    path = folder / vendor / "oct.mhd"
    write_volume(path, volume, geometry)
    times = {}
    start = time.perf_counter()
    volume, geometry = read_volume(path)
    times["read"] = time.perf_counter() - start
    start = time.perf_counter()
    prepared = preprocess_volume(volume, vendor, reference_counts, cfg, str(path))
    times["preprocess"] = time.perf_counter() - start
    # warm-up at this input size (oneDNN / cuDNN choose their kernels on the first call of a shape)
    inference.predict_volume(model, prepared[:min(batch_size, len(prepared))], geometry, cfg, runtime, batch_size)
    model.reset()
    _synchronize(runtime.device)
    start = time.perf_counter()
    result = inference.predict_volume(model, prepared, geometry, cfg, runtime, batch_size)
    _synchronize(runtime.device)
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
            "forward s": model.seconds, "GFLOP/B-scan": flops / len(volume) / 1e9,
            "GFLOP/s": flops / model.seconds / 1e9}


def markdown_table(rows: list[dict], peak: float) -> str:
    columns = list(rows[0]) + ["% of peak"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        row = {**row, "% of peak": 100 * row["GFLOP/s"] / peak}
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="auto, cpu or cuda (default: config DEVICE)")
    parser.add_argument("--vendors", default=",".join(VOLUMES), help="comma-separated (default: %(default)s)")
    parser.add_argument("--bscans", type=int, default=None, help="B-scans per volume (default: the vendor's)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: config INFERENCE_BATCH_SIZE")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.overrides)
    except ConfigError as error:
        parser.error(str(error))
    vendors = [v for v in args.vendors.split(",") if v]
    unknown = [v for v in vendors if v not in VOLUMES]
    if unknown or (args.bscans is not None and args.bscans < 1):
        parser.error(f"--vendors takes {', '.join(VOLUMES)}; --bscans must be >= 1")
    runtime = select_runtime(cfg, args.device)
    batch_size = args.batch_size or cfg.INFERENCE_BATCH_SIZE
    torch.manual_seed(cfg.SEED)
    network = build_unet(unet_arguments(cfg)).eval().to(runtime.device)
    if runtime.channels_last:
        network = network.to(memory_format=torch.channels_last)
    model = CountingModel(network, runtime.device)
    dtype = runtime.autocast_dtype or torch.float32
    peak = matmul_peak_gflops(runtime.device, dtype)
    rng = np.random.default_rng(cfg.SEED)
    reference_counts = intensity_histogram(to_uint8_intensity(noise_volume("Spectralis", 4, rng)[0]))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as folder:
        for vendor in vendors:
            rows.append(bench_vendor(vendor, model, cfg, runtime, batch_size, Path(folder), reference_counts,
                                     args.bscans, rng))
            print(f"{vendor}: {rows[-1]['total s']:.1f} s", file=sys.stderr)
    name = torch.cuda.get_device_name(runtime.device) if runtime.device.type == "cuda" else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{cfg.ENCODER} U-Net on {runtime.device} ({name}), {str(dtype).replace('torch.', '')}, channels_last "
          f"{runtime.channels_last}, batch {batch_size}; matmul peak {peak:.0f} GFLOP/s\n")
    print(markdown_table(rows, peak))
    return 0


if __name__ == "__main__":
    sys.exit(main())
