"""bench/conv_layouts.py: the FLOP count by hand, and a table on a tiny convolution."""

from __future__ import annotations

import pytest
import torch

from bench import conv_layouts


def test_conv_gflop_by_hand():
    # 2 x batch 2 x output 3 x 4 pixels x 5 in x 6 out x 9 taps
    assert conv_layouts.conv_gflop((5, 6, 5, 6), batch=2) == pytest.approx(2 * 2 * 12 * 5 * 6 * 9 / 1e9)


def test_a_row_per_shape_and_layout_with_each_pass(monkeypatch, capsys):
    monkeypatch.setattr(conv_layouts, "SHAPES", ((4, 8, 12, 10),))
    assert conv_layouts.main(["--batch", "2", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| 4 -> 8, 12 x 10 |")]
    assert [row.split(" | ")[1] for row in rows] == ["NHWC", "NCHW"]
    assert all(float(cell) >= 0 for row in rows for cell in row.strip(" |").split(" | ")[2:])  # whole GFLOP/s
    assert "| conv (channels, input size) | layout | forward | input gradient | weight gradient | all three |" in out


def test_each_pass_is_timed_apart(monkeypatch):
    """time_passes gives the forward pass and each gradient's own seconds: the gradient calls minus the forward."""
    calls = iter([1.0, 3.0, 2.5])  # best seconds of forward, forward + input gradient, forward + weight gradient
    monkeypatch.setattr(conv_layouts, "best_seconds", lambda work, repeats: next(calls))
    seconds = conv_layouts.time_passes((2, 2, 5, 5), batch=1, channels_last=True, dtype=torch.float32, repeats=1)
    assert seconds == {"forward": 1.0, "input gradient": 2.0, "weight gradient": 1.5}


def test_bad_counts_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        conv_layouts.main(["--repeats", "0"])
    assert exit_info.value.code == 2 and "--batch and --repeats must be >= 1" in capsys.readouterr().err
