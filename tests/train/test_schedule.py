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


def test_snapshot_cycles_restart_the_poly_decay_in_each_cycle():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    schedule = LearningRateSchedule(optimizer, "poly", 1e-3, epochs=15, budget_minutes=0, cycles=3)
    rates = []
    for epoch in range(1, 16):
        schedule.epoch = epoch
        schedule.step()
        rates.append(optimizer.param_groups[0]["lr"])
    one_cycle = [poly_learning_rate(1e-3, k / 5) for k in range(5)]
    assert rates == pytest.approx(one_cycle * 3)  # three times the decay of 5 epochs, from the full rate
    assert rates[5] == pytest.approx(1e-3) and rates[4] < 0.3e-3
    with pytest.raises(ValueError, match="SNAPSHOT_CYCLES=4"):
        LearningRateSchedule(optimizer, "poly", 1e-3, epochs=15, budget_minutes=0, cycles=4)
    with pytest.raises(ValueError, match="without a time budget"):
        LearningRateSchedule(optimizer, "poly", 1e-3, epochs=15, budget_minutes=5.0, cycles=3)
