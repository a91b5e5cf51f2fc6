"""What the speed benchmarks share: FLOP counts of the networks and the matrix-product peak they are set against
(their tables: bench/report_tables.py).

A network's speed is given as achieved GFLOP/s (FLOPs counted by :class:`torch.utils.flop_counter.FlopCounterMode`,
a multiply-add counting 2, over the time measured) and as a share of the best GFLOP/s of a large matrix product
measured in the same process, on the same device and threads (:func:`matmul_peak_gflops`): the most a dense kernel
gets out of this machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from utils.model.runtime import Runtime

# Overrides that time bf16 wherever the device has it, even on a CPU whose bf16 runs slower than fp32, where
# train.py and predict.py would not use it (BF16_SPEED_CHECK): the benches time both precisions
BF16_WHEREVER_AVAILABLE = ("MIXED_PRECISION=True", "BF16_SPEED_CHECK=False")


def precision_overrides(bf16: bool) -> list[str]:
    """The ``--set`` items of a timed row's precision: bf16 wherever the device has it (BF16_WHEREVER_AVAILABLE),
    else fp32."""
    return [*BF16_WHEREVER_AVAILABLE] if bf16 else ["MIXED_PRECISION=False"]


PRECISION_NAMES = {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA is asynchronous), so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_name(dtype: torch.dtype | None) -> str:
    """``"bf16"``, ``"fp16"`` or ``"fp32"`` (``None``: no autocast) for a table."""
    return PRECISION_NAMES.get(dtype, str(dtype).replace("torch.", ""))


def count_flops(work: Callable[[], Any]) -> int:
    """FLOPs of the matrix multiplies and convolutions (forward and backward) that ``work()`` runs."""
    with FlopCounterMode(display=False) as counter:
        work()
    return int(counter.get_total_flops())


def forward_flops(model: nn.Module, shape: tuple[int, ...], runtime: Runtime) -> int:
    """FLOPs of one forward pass of a ``shape`` ``(n, 3, H, W)`` batch (counted on one image, times ``n``)."""
    images = torch.zeros((1,) + tuple(shape[1:]), device=runtime.device)
    if runtime.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        return count_flops(lambda: model(images)) * shape[0]


def default_matmul_size(device: torch.device) -> int:
    """Side of the square matrices of :func:`matmul_peak_gflops`: 8192 on GPU, 4096 on CPU."""
    return 8192 if device.type == "cuda" else 4096


# oneDNN's GEMM on a CPU, timed as a 1x1 convolution in NHWC: channels in = out, and pixels (a square image's side);
# 1024 channels over 64 x 64 pixels reach its peak on the 2-core CPUs measured (wider ones spill the caches)
ONEDNN_GEMM_CHANNELS, ONEDNN_GEMM_SIDE = 1024, 64


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int | None = None, repeats: int = 5) -> float:
    """Best GFLOP/s of a matrix product in ``dtype`` (no autocast), after a warm-up.

    Timed as ``torch.matmul`` of two ``n x n`` matrices (MKL's GEMM in fp32 on a CPU, cuBLAS on a GPU) and, on a CPU,
    also as a 1x1 convolution through oneDNN (:data:`ONEDNN_GEMM_CHANNELS` channels in and out over
    :data:`ONEDNN_GEMM_SIDE` squared pixels in NHWC: the library that runs the networks' convolutions); the faster
    counts. On some AMD CPUs MKL's fp32 GEMM runs at half the speed oneDNN reaches (210 against 490 GFLOP/s on a
    2-core AMD EPYC), which would put the networks' convolutions above their "peak".

    Args:
        device: where to multiply.
        dtype: the matrices' dtype (bf16 for the mixed-precision peak, fp32 for the full-precision one).
        n: side of ``torch.matmul``'s matrices (default :func:`default_matmul_size`).
        repeats: timed products of each kind; the fastest counts.

    Returns:
        GFLOP/s: the product's FLOPs (``2 M N K``: M N K multiply-adds) over its best seconds, / 1e9.
    """
    n = n or default_matmul_size(device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=generator).to(dtype)
    b = torch.randn(n, n, device=device, generator=generator).to(dtype)
    products = [(2 * n ** 3, lambda: torch.matmul(a, b))]  # (FLOPs, the product)
    if device.type == "cpu":
        channels, side = ONEDNN_GEMM_CHANNELS, ONEDNN_GEMM_SIDE
        image = torch.randn(1, channels, side, side, generator=generator).to(dtype)
        image = image.contiguous(memory_format=torch.channels_last)
        kernel = torch.randn(channels, channels, 1, 1, generator=generator).to(dtype)
        kernel = kernel.contiguous(memory_format=torch.channels_last)
        products.append((2 * side * side * channels * channels, lambda: torch.nn.functional.conv2d(image, kernel)))
    best = 0.0
    with torch.autocast(device_type=device.type, enabled=False), torch.inference_mode():
        for flops, product in products:
            product()
            for _ in range(repeats):
                synchronize(device)
                start = time.perf_counter()
                product()
                synchronize(device)
                best = max(best, flops / (time.perf_counter() - start) / 1e9)
    return best


def matmul_peaks(runtime: Runtime, n: int | None = None, repeats: int = 5) -> dict[str, float]:
    """Matmul peaks by precision name: the runtime's mixed-precision dtype where it has one (bf16 on a
    bf16-capable CPU or GPU), then ``fp32``."""
    dtypes = ([runtime.autocast_dtype] if runtime.autocast_dtype is not None else []) + [torch.float32]
    return {precision_name(dtype): matmul_peak_gflops(runtime.device, dtype, n, repeats) for dtype in dtypes}


def peak_shares(gflops: float, peaks: dict[str, float]) -> dict[str, float]:
    """``{"% of bf16 peak": ..., "% of fp32 peak": ...}``: achieved GFLOP/s as a share of each peak of
    :func:`matmul_peaks`."""
    return {f"% of {name} peak": 100 * gflops / peak for name, peak in peaks.items()}


def device_name(device: torch.device) -> str:
    """The GPU's name, or ``CPU, <threads> threads``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"
