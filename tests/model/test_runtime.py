"""utils/model/runtime.py: the device a config asks for, and the one-line error when it cannot be had."""

import pytest
import torch

from utils.configuration import ConfigError, load_config
from utils.model import runtime


def test_cpu_runtime_follows_the_config(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    chosen = runtime.select_runtime(load_config(["DEVICE=cpu", "CHANNELS_LAST=False"]))
    assert chosen.device == torch.device("cpu") and chosen.autocast_dtype is None and not chosen.channels_last
    assert chosen.is_main and not chosen.distributed


def test_cuda_without_a_gpu_is_a_configuration_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^DEVICE='cuda' but torch sees no CUDA device .*--set DEVICE=cpu$"):
        runtime.select_runtime(load_config(["DEVICE=cuda"]))
    assert runtime.select_runtime(load_config(["DEVICE=auto"])).device == torch.device("cpu")


def test_unknown_device_argument_is_a_configuration_error():
    with pytest.raises(ConfigError, match="DEVICE='tpu': expected one of auto, cpu, cuda"):
        runtime.select_runtime(load_config([]), device="tpu")
