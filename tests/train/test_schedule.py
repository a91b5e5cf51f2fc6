"""utils/train/schedule.py: the constant and the polynomial learning rate."""

import pytest
import torch

from utils.train import schedule as schedule_module
from utils.train.schedule import LearningRateSchedule, poly_learning_rate


def _optimizer(rate: float = 1e-3) -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=rate)


def test_poly_learning_rate_values_and_clipping():
    assert poly_learning_rate(1e-3, 0.0) == pytest.approx(1e-3)
    assert poly_learning_rate(1e-3, 0.5) == pytest.approx(1e-3 * 0.5 ** 0.9)
    assert poly_learning_rate(1e-3, 1.0) == 0.0
    assert poly_learning_rate(1e-3, 1.7) == 0.0 and poly_learning_rate(1e-3, -1.0) == pytest.approx(1e-3)


def test_constant_schedule_never_touches_the_rate():
    optimizer = _optimizer()
    schedule = LearningRateSchedule(optimizer, "constant", 1e-3, epochs=10, budget_minutes=0)
    schedule.epoch = 9
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == 1e-3


def test_poly_follows_the_larger_of_epoch_and_time_progress(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(schedule_module.time, "perf_counter", lambda: clock[0])
    optimizer = _optimizer()
    schedule = LearningRateSchedule(optimizer, "poly", 1e-3, epochs=10, budget_minutes=1.0)
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)  # the start
    schedule.epoch = 3  # 2 of 10 epochs done
    clock[0] = 106.0  # 10% of the 60 s budget
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.8 ** 0.9)
    clock[0] = 145.0  # 75% of the budget: time leads
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.25 ** 0.9)
    clock[0] = 200.0  # past the budget
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == 0.0
