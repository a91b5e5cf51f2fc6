"""The authors' network's 3x3 convolutions timed apart, in NHWC and NCHW: the forward pass, the input gradient and the
weight gradient, each as GFLOP/s, to see which memory layout a CPU trains fastest in and which pass limits it.

usage: python bench/conv_layouts.py [--batch 8] [--repeats 3] [--precision fp32|bf16]

Shapes: the ``rmit_unet`` encoder's convolution at each level for a 256 x 128 patch (64, 128, 256 and 512 channels,
the spatial size shrinking as in the network). Run it as an AVX2-only CPU would with ``ONEDNN_MAX_CPU_ISA=AVX2
MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2``. Each figure is the best of ``--repeats`` timed calls after
two warm-up calls, on the threads torch uses (``torch.get_num_threads()``). Printed as Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report_tables import format_number, markdown_table  # noqa: E402

# (input channels, output channels, input height, input width): rmit_unet's second 3x3 conv at each encoder level
# for a 256 x 128 patch (utils/model/rmit_unet.py), unpadded
SHAPES = ((64, 64, 254, 126), (128, 128, 124, 60), (256, 256, 59, 27), (512, 512, 26, 10))
PASSES = ("forward", "input gradient", "weight gradient")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def conv_gflop(shape: tuple[int, int, int, int], batch: int) -> float:
    """FLOPs (multiply and add) of one unpadded 3x3 convolution's forward pass, in GFLOP; each gradient costs the
    same."""
    c_in, c_out, height, width = shape
    return 2 * batch * (height - 2) * (width - 2) * c_in * c_out * 9 / 1e9


def best_seconds(work, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``work()``, after two untimed ones."""
    for _ in range(2):
        work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def time_passes(shape: tuple[int, int, int, int], batch: int, channels_last: bool, dtype: torch.dtype,
                repeats: int) -> dict[str, float]:
    """Seconds of each pass of :data:`PASSES` for one convolution: the forward pass alone, and each gradient as
    (forward + that gradient) - forward."""
    c_in, c_out, height, width = shape
    layout = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(c_in, c_out, 3).to(dtype=dtype, memory_format=layout)
    images = torch.randn(batch, c_in, height, width, dtype=dtype).contiguous(memory_format=layout)

    def run(input_gradient: bool, weight_gradient: bool) -> None:
        inputs = images.detach().requires_grad_(input_gradient)
        for parameter in conv.parameters():
            parameter.requires_grad_(weight_gradient)
            parameter.grad = None
        output = conv(inputs)
        if input_gradient or weight_gradient:
            output.backward(torch.ones_like(output))

    forward = best_seconds(lambda: run(False, False), repeats)
    return {"forward": forward,
            "input gradient": max(best_seconds(lambda: run(True, False), repeats) - forward, 1e-9),
            "weight gradient": max(best_seconds(lambda: run(False, True), repeats) - forward, 1e-9)}


def rows(batch: int, repeats: int, dtype: torch.dtype) -> list[list[str]]:
    """One Markdown row per shape and layout: GFLOP/s of each pass and of the three together (a training step's
    share of this convolution)."""
    table_rows = []
    for shape in SHAPES:
        gflop = conv_gflop(shape, batch)
        for channels_last in (True, False):
            seconds = time_passes(shape, batch, channels_last, dtype, repeats)
            name = f"{shape[0]} -> {shape[1]}, {shape[2]} x {shape[3]}"
            table_rows.append([name, "NHWC" if channels_last else "NCHW",
                          *(format_number(gflop / seconds[name], 0) for name in PASSES),
                          format_number(3 * gflop / sum(seconds.values()), 0)])
    return table_rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8, help="patches per call (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per pass (default: %(default)s)")
    parser.add_argument("--precision", default="fp32", choices=sorted(DTYPES), help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error(f"--batch and --repeats must be >= 1 (got {args.batch} and {args.repeats})")
    print(f"\n3x3 convolutions of rmit_unet, batch {args.batch}, {args.precision}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; GFLOP/s:\n")
    header = ["conv (channels, input size)", "layout", *PASSES, "all three"]
    print(markdown_table(header, rows(args.batch, args.repeats, DTYPES[args.precision])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
