"""bench/flops.py: the matrix-product peak takes the faster of MKL's and oneDNN's GEMM on a CPU."""

from __future__ import annotations

import time

import torch

from bench import flops


def test_the_cpu_peak_is_the_faster_of_the_two_products(monkeypatch):
    timed = []
    real_conv2d = torch.nn.functional.conv2d

    def conv2d(image, kernel):
        timed.append((tuple(image.shape), tuple(kernel.shape), image.is_contiguous(memory_format=torch.channels_last)))
        return real_conv2d(image, kernel)

    monkeypatch.setattr(flops, "ONEDNN_GEMM_CHANNELS", 32)
    monkeypatch.setattr(flops, "ONEDNN_GEMM_SIDE", 8)
    monkeypatch.setattr(torch.nn.functional, "conv2d", conv2d)
    peak = flops.matmul_peak_gflops(torch.device("cpu"), torch.float32, n=64, repeats=2)
    assert peak > 0
    assert timed == [((1, 32, 8, 8), (32, 32, 1, 1), True)] * 3  # a warm-up and two timed
    # with oneDNN's product made slow, the peak is torch.matmul's
    monkeypatch.setattr(torch.nn.functional, "conv2d", lambda image, kernel: time.sleep(0.05))
    slow = flops.matmul_peak_gflops(torch.device("cpu"), torch.float32, n=64, repeats=2)
    assert slow > 2 * 64 ** 3 / 0.05 / 1e9  # faster than the slowed product could give


def test_the_onednn_product_counts_when_matmul_is_slower(monkeypatch):
    monkeypatch.setattr(flops, "ONEDNN_GEMM_CHANNELS", 32)
    monkeypatch.setattr(flops, "ONEDNN_GEMM_SIDE", 8)
    real_matmul = torch.matmul

    def slow_matmul(a, b):
        time.sleep(0.05)
        return real_matmul(a, b)

    monkeypatch.setattr(torch, "matmul", slow_matmul)
    peak = flops.matmul_peak_gflops(torch.device("cpu"), torch.float32, n=64, repeats=2)
    assert peak > 2 * 64 ** 3 / 0.05 / 1e9  # more than the slowed torch.matmul could give: the 1x1 convolution's
