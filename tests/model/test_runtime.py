"""utils/model/runtime.py: the device the settings ask for, and the one-line error when it cannot be had."""

import io

import pytest
import torch

from utils.configuration import ConfigError, load_config
from utils.model import runtime
from utils.model.runtime import RuntimeSettings


def test_cpu_runtime_follows_the_config(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    settings = RuntimeSettings.from_config(load_config(["DEVICE=cpu", "CHANNELS_LAST=False"]))
    assert settings == RuntimeSettings(device="cpu", channels_last=False)
    chosen = runtime.select_runtime(settings)
    assert chosen.device == torch.device("cpu") and chosen.autocast_dtype is None and not chosen.channels_last
    assert chosen.is_main and not chosen.distributed


def test_cuda_without_a_gpu_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^DEVICE='cuda' but torch sees no CUDA device .*--set DEVICE=cpu$"):
        runtime.select_runtime(RuntimeSettings(device="cuda"))
    assert runtime.select_runtime(RuntimeSettings(device="auto")).device == torch.device("cpu")


def test_an_unknown_device_is_refused_where_it_is_given(capsys):
    """Checked once where it enters: the config when it loads, bench_predict's --device by argparse."""
    from bench import bench_predict
    with pytest.raises(ConfigError, match="DEVICE='tpu'"):
        load_config(["DEVICE='tpu'"])
    with pytest.raises(SystemExit) as exit_info:
        bench_predict.main(["--device", "tpu"])
    assert exit_info.value.code == 2 and "invalid choice: 'tpu'" in capsys.readouterr().err


@pytest.mark.parametrize("variable", ["ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"])
def test_a_onednn_cap_below_bf16_turns_bf16_autocast_off(monkeypatch, variable):
    """Under ``ONEDNN_MAX_CPU_ISA=AVX2`` oneDNN emulates bf16 (slower than fp32): the runtime stays in fp32."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "avx2")
    assert not runtime.cpu_supports_bf16()
    assert runtime.select_runtime(RuntimeSettings(device="cpu", mixed_precision=True)).autocast_dtype is None
    monkeypatch.setenv(variable, "AVX512_CORE_AMX")  # a cap that keeps bf16: the CPU's own flags decide
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA" if variable == "DNNL_MAX_CPU_ISA" else "DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(runtime, "open", lambda *args, **kwargs: io.StringIO("flags : avx2 amx_bf16"), raising=False)
    assert runtime.cpu_supports_bf16()
    monkeypatch.setattr(runtime, "open", lambda *args, **kwargs: io.StringIO("flags : avx2"), raising=False)
    assert not runtime.cpu_supports_bf16()


def test_bf16_speedup_times_a_convolution_without_drawing_from_the_seeded_generators(monkeypatch):
    monkeypatch.setattr(runtime, "BF16_PROBE_SHAPE", (1, 64, 32, 32))  # small: the test checks behaviour, not speed
    runtime.bf16_speedup.cache_clear()  # an earlier select_runtime in this process may have measured already
    state = torch.get_rng_state()
    with torch.inference_mode():  # as a caller segmenting under inference mode would call it
        speedup = runtime.bf16_speedup()
    assert speedup > 0 and runtime.bf16_speedup() == speedup  # measured once per process
    assert torch.equal(torch.get_rng_state(), state)
    runtime.bf16_speedup.cache_clear()  # later callers measure at the real shape


@pytest.mark.parametrize("speedup, check, expected", [(0.6, True, None), (1.9, True, torch.bfloat16),
                                                      (0.6, False, torch.bfloat16)])
def test_bf16_is_kept_only_where_it_runs_faster_than_fp32(monkeypatch, speedup, check, expected):
    """A CPU with AVX512-BF16 whose bf16 convolutions run slower than fp32 (an Intel Xeon VM without AMX) trains in
    fp32 and says why; BF16_SPEED_CHECK=False keeps bf16 wherever the CPU has it, without timing anything."""
    timed = []
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(runtime, "bf16_speedup", lambda: timed.append(1) or speedup)
    chosen = runtime.select_runtime(RuntimeSettings(device="cpu", mixed_precision=True, bf16_speed_check=check))
    assert chosen.autocast_dtype is expected
    assert len(timed) == int(check)
    if expected is None:
        assert chosen.note == ("fp32: this CPU has bf16 but ran a convolution 0.60x as fast in bf16 as in fp32 "
                               "(BF16_SPEED_CHECK; --set BF16_SPEED_CHECK=False keeps bf16)")
    else:
        assert chosen.note == ""
    assert runtime.select_runtime(RuntimeSettings(device="cpu", mixed_precision=False)).autocast_dtype is None


@pytest.mark.parametrize("avx2, autocast, channels_last, trains_faster_nchw, expected", [
    (True, None, True, True, False),  # the authors' network in fp32 where oneDNN runs AVX2: NCHW
    (False, None, True, True, True),  # ... with AVX-512: NHWC
    (True, torch.bfloat16, True, True, True),  # ... in bf16: NHWC
    (True, None, True, False, True),  # smp's U-Net: NHWC
    (True, None, False, True, False),  # CHANNELS_LAST=False: NCHW everywhere
])
def test_a_network_trains_in_the_layout_measured_faster_for_it(monkeypatch, avx2, autocast, channels_last,
                                                                trains_faster_nchw, expected):
    monkeypatch.setattr(runtime, "onednn_runs_avx2", lambda: avx2)
    base = runtime.Runtime(torch.device("cpu"), autocast, channels_last)
    trained = runtime.training_runtime(base, trains_faster_nchw)
    assert trained.channels_last is expected
    assert (trained.device, trained.autocast_dtype) == (base.device, base.autocast_dtype)
    on_gpu = runtime.Runtime(torch.device("cuda", 0), None, True)
    assert runtime.training_runtime(on_gpu, True) is on_gpu


def test_the_authors_network_alone_trains_faster_in_nchw_on_avx2():
    from utils.model.networks import MODELS
    assert {name for name, network in MODELS.items() if network.trains_faster_nchw_on_avx2} == {"rmit_unet"}


@pytest.mark.parametrize("flags, environment, expected", [
    ("fpu avx avx2 fma", {}, True),  # an AVX2-only CPU
    ("fpu avx avx2 fma avx512f avx512_bf16", {}, False),  # AVX-512
    ("fpu avx avx2 fma avx512f", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),  # capped to AVX2, as the benchmarks emulate
    ("fpu avx avx2 fma avx512f", {"DNNL_MAX_CPU_ISA": "avx2_vnni"}, True),  # the older name, any case
    ("fpu avx avx2 fma avx512f", {"ATEN_CPU_CAPABILITY": "avx2"}, False),  # ATen's cap alone: oneDNN still AVX-512
    ("fpu avx avx2 fma", {"ONEDNN_MAX_CPU_ISA": "AVX"}, False),  # capped below AVX2
    ("fpu avx avx2 fma", {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True),  # a cap above the CPU changes nothing
    ("fpu sse4_1", {}, False),  # no AVX2
    ("", {}, False),  # /proc/cpuinfo unreadable
])
def test_onednn_runs_avx2_reads_the_cpu_and_onednns_cap(monkeypatch, flags, environment, expected):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runtime, "cpu_flags", lambda: set(flags.split()) if flags else None)
    assert runtime.onednn_runs_avx2() is expected
