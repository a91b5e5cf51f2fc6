"""Where and how the network runs: device, mixed precision, memory layout, and torchrun (DDP) set-up."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time

import torch
import torch.distributed as dist

import config
from utils.configuration import DEVICES, ConfigError
from utils.stage_settings import settings_from_config


# oneDNN's instruction-set caps (ONEDNN_MAX_CPU_ISA, or its older name DNNL_MAX_CPU_ISA) below which it has no
# native bf16 arithmetic: under such a cap bf16 convolutions are emulated, slower than fp32
ISA_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def cpu_flags() -> set[str] | None:
    """The words of /proc/cpuinfo's flags lines (``avx2``, ``avx512f``, ``amx_bf16``, ...); None where it cannot be
    read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as cpuinfo:
            return {word for line in cpuinfo if line.startswith("flags") for word in line.split()}
    except OSError:
        return None


def onednn_cap() -> str:
    """oneDNN's instruction-set cap (``ONEDNN_MAX_CPU_ISA``, or its older name ``DNNL_MAX_CPU_ISA``), upper case;
    "" when none is set."""
    return os.environ.get("ONEDNN_MAX_CPU_ISA", os.environ.get("DNNL_MAX_CPU_ISA", "")).strip().upper()


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast may pay off
    (:func:`bf16_speedup` tells whether it does), and oneDNN is not capped below it (``ONEDNN_MAX_CPU_ISA``, e.g.
    ``AVX2`` to run as an AVX2-only CPU would)."""
    if onednn_cap() in ISA_CAPS_WITHOUT_BF16:
        return False
    flags = cpu_flags()
    if flags is None:
        return torch.backends.cpu.get_cpu_capability() in ("AMX", "AVX512_BF16")
    return "avx512_bf16" in flags or "amx_bf16" in flags


# bf16 autocast stays on, on a CPU with native bf16, only where a convolution's training pass runs at least this many
# times as fast in bf16 as in fp32 (:func:`bf16_speedup`, with BF16_SPEED_CHECK). Measured (docs/benchmarks.md):
# about 2x on an AMD EPYC with AVX512-BF16 and more with AMX, but 0.6-0.7x on an Intel Xeon (a VM's: AVX512-BF16
# without AMX), where fp32 trains both networks about 30% faster.
BF16_MIN_SPEEDUP = 1.1
# (N, C, H, W) of the convolution bf16_speedup times: 3x3, 64 channels in and out, NHWC (about 0.4 s for both)
BF16_PROBE_SHAPE = (4, 64, 64, 128)


@functools.cache
def bf16_speedup() -> float:
    """How many times as fast a convolution's forward and backward pass runs in bf16 autocast as in fp32 on this CPU
    (> 1: bf16 is faster): a 3x3, 64-channel convolution of ``BF16_PROBE_SHAPE`` in NHWC, with torch's current
    threads, the best of 3 passes in each precision after one to warm up. Measured once per process (about 0.4 s);
    its tensors come from a generator of its own, so a seeded run draws the same numbers as without it; it times
    gradients even when called under ``torch.no_grad`` or ``torch.inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        return _timed_speedup()


def _timed_speedup() -> float:
    """:func:`bf16_speedup`'s measure, with gradients on."""
    generator = torch.Generator().manual_seed(0)
    batch, channels, height, width = BF16_PROBE_SHAPE
    images = torch.randn(batch, channels, height, width, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    weight = (torch.randn(channels, channels, 3, 3, generator=generator) / (3 * channels ** 0.5))
    weight = weight.contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def best_seconds(bf16: bool) -> float:
        times = []
        for _ in range(4):
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                output = torch.nn.functional.conv2d(images, weight, padding=1)
            output.float().sum().backward()
            times.append(time.perf_counter() - start)
        return min(times[1:])

    return best_seconds(False) / best_seconds(True)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """How this process runs the network.

    Attributes:
        device: ``cuda:<local rank>`` when CUDA is present, else ``cpu``.
        autocast_dtype: bf16 on a bf16-capable CPU where bf16 runs faster than fp32 (when enabled), bf16/fp16 on
            GPU (when enabled), else None.
        channels_last: NHWC memory layout (faster convolutions on CPU with oneDNN and on tensor cores).
        rank, world_size, local_rank: the torchrun process layout (0, 1, 0 without torchrun).
        note: why the precision is not the one asked for, for the log ("" when it is).
    """

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    note: str = ""

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed-precision context for forward passes (a no-op when disabled)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    @property
    def layout(self) -> str:
        """``"NHWC"`` (channels_last) or ``"NCHW"``, for logs and tables."""
        return "NHWC" if self.channels_last else "NCHW"

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """Moves a batch to the device, NHWC when channels_last (4-D tensors only)."""
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor


# oneDNN's instruction-set caps at the AVX2 level: under one, its convolutions run AVX2 kernels whatever the CPU has
ISA_CAPS_AT_AVX2 = ("AVX2", "AVX2_VNNI", "AVX2_VNNI_2")


def onednn_runs_avx2() -> bool:
    """True when oneDNN's convolutions run AVX2 kernels here: on a CPU with AVX2 and without AVX-512 (its flags), or
    under a oneDNN cap at the AVX2 level (``ONEDNN_MAX_CPU_ISA=AVX2``, as docs/benchmarks.md emulates an AVX2-only
    CPU). oneDNN's cap decides, not ATen's ``ATEN_CPU_CAPABILITY``: oneDNN runs the convolutions."""
    flags, cap = cpu_flags() or set(), onednn_cap()
    if "avx2" not in flags or cap in ("SSE41", "AVX"):
        return False
    return cap in ISA_CAPS_AT_AVX2 or "avx512f" not in flags


def training_runtime(runtime: Runtime, trains_faster_nchw_on_avx2: bool) -> Runtime:
    """The runtime a network trains with: ``runtime``, but in NCHW where ``CHANNELS_LAST`` asks for NHWC and the
    network trains faster in NCHW on AVX2 (``trains_faster_nchw_on_avx2``, its
    :class:`~utils.model.networks.Network`'s): in fp32 where oneDNN runs AVX2 kernels (:func:`onednn_runs_avx2`).
    Measured on the whole network (bench/bench_train.py, docs/benchmarks.md: the authors' network about 10% faster in
    NCHW there); bench/conv_layouts.py shows NHWC's weak point, the weight gradient of its 64-channel convolutions
    (83 GFLOP/s against NCHW's 129), though over its encoder's 3x3 convolutions alone NHWC is a little ahead.
    Inference keeps NHWC, faster there on every CPU measured."""
    if (runtime.channels_last and trains_faster_nchw_on_avx2 and runtime.device.type == "cpu"
            and runtime.autocast_dtype is None and onednn_runs_avx2()):
        return dataclasses.replace(runtime, channels_last=False)
    return runtime


def collective_device() -> torch.device:
    """Where a tensor for a collective (all_reduce, broadcast) must live in the initialised process group: this
    rank's GPU under NCCL, which reduces only CUDA tensors, else the CPU (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """What :func:`select_runtime` reads of the config, built once per run (:meth:`from_config`). Each field is the
    config.py setting of the same name in upper case (see config.py for its meaning); the defaults are config.py's, so
    a test names only what it changes.

    Attributes:
        device: ``DEVICE``, one of ``DEVICES``: ``"auto"`` (CUDA when torch sees it, else the CPU), ``"cuda"`` or
            ``"cpu"`` (checked when the config loads; a value given otherwise is checked by whoever gives it).
        mixed_precision: ``MIXED_PRECISION``: bf16/fp16 autocast where the device has it.
        channels_last: ``CHANNELS_LAST``: NHWC memory layout on CPU and CUDA.
        bf16_speed_check: ``BF16_SPEED_CHECK``: on a CPU, bf16 only where :func:`bf16_speedup` reaches
            ``BF16_MIN_SPEEDUP``.
    """

    device: str = config.DEVICE
    mixed_precision: bool = config.MIXED_PRECISION
    channels_last: bool = config.CHANNELS_LAST
    bf16_speed_check: bool = config.BF16_SPEED_CHECK

    @classmethod
    def from_config(cls, cfg) -> RuntimeSettings:
        """The runtime settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg)


def _cpu_autocast(speed_check: bool, rank: int, distributed: bool) -> tuple[torch.dtype | None, str]:
    """bf16, or None (fp32) with the note saying why, on a CPU with native bf16: None where ``speed_check`` finds
    bf16 under ``BF16_MIN_SPEEDUP`` times as fast as fp32. Under torchrun rank 0 alone times it (the other ranks'
    timings would compete with its) and every rank takes its measure: one precision for all. Each rank must reach
    this call, as the ranks of one machine do (their flags and oneDNN caps alike; ranks on machines that differ in
    bf16 are not supported)."""
    if not speed_check:
        return torch.bfloat16, ""
    speedup = bf16_speedup() if rank == 0 or not distributed else 0.0
    if distributed:
        shared = torch.tensor([speedup], dtype=torch.float64, device=collective_device())
        dist.broadcast(shared, src=0)
        speedup = shared.item()
    if speedup >= BF16_MIN_SPEEDUP:
        return torch.bfloat16, ""
    return None, (f"fp32: this CPU has bf16 but ran a convolution {speedup:.2f}x as fast in bf16 as in fp32 "
                  f"(BF16_SPEED_CHECK; --set BF16_SPEED_CHECK=False keeps bf16)")


def select_runtime(settings: RuntimeSettings) -> Runtime:
    """The runtime for this process from the settings (``DEVICE``, ``MIXED_PRECISION``, ``BF16_SPEED_CHECK``,
    ``CHANNELS_LAST``) and torchrun's variables.

    Under torchrun (``WORLD_SIZE`` > 1) this initialises the process group (nccl on GPU, gloo on CPU) and gives
    each rank its own GPU. On a CPU with native bf16 and the speed check on, it first times bf16 against fp32
    (:func:`bf16_speedup`, about 0.4 s once per process; under torchrun on rank 0, its measure broadcast).

    Args:
        settings: the device, mixed precision, speed check and memory layout asked for (:class:`RuntimeSettings`).

    Raises:
        ConfigError: the device is ``cuda`` and torch sees no CUDA device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    name = settings.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("DEVICE='cuda' but torch sees no CUDA device on this machine; use --set DEVICE=auto "
                              "or --set DEVICE=cpu")
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device(name)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    autocast_dtype, note = None, ""
    if settings.mixed_precision:
        if torch_device.type == "cuda":
            autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif torch_device.type == "cpu" and cpu_supports_bf16():
            autocast_dtype, note = _cpu_autocast(settings.bf16_speed_check, rank, world_size > 1)
    channels_last = settings.channels_last and torch_device.type in ("cpu", "cuda")
    return Runtime(torch_device, autocast_dtype, channels_last, rank, world_size, local_rank, note)
