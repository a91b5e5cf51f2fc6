"""The learning-rate schedule, chosen by ``LR_SCHEDULE``: constant (the method: ``LEARNING_RATE`` throughout,
RuwanT/retouch ``train_model.py``), or nnU-Net's polynomial decay to 0 over the training (an option beyond the
method, for short CPU budgets where the last steps at full rate leave the weights noisy)."""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.distributed as dist

from utils.model.runtime import Runtime, collective_device

POLY_EXPONENT = 0.9  # nnU-Net's PolyLRScheduler exponent


def poly_learning_rate(base: float, progress: float, exponent: float = POLY_EXPONENT) -> float:
    """``base * (1 - progress) ** exponent``; ``progress`` is clipped to [0, 1] (0 at the start, 1 at the end)."""
    return base * (1.0 - min(max(progress, 0.0), 1.0)) ** exponent


# LR_SCHEDULE -> the rate for (base rate, progress), or None: the optimiser's rate is never changed (the names are
# utils/configuration.py's CHOICES["LR_SCHEDULE"], checked there)
LR_SCHEDULES: dict[str, Callable[[float, float], float] | None] = {"constant": None, "poly": poly_learning_rate}


class LearningRateSchedule:
    """Sets an optimiser's learning rate before each step from how much of the training is done (``"constant"``
    leaves it as it is).

    Progress is the larger of the epochs done (``(epoch - 1) / epochs`` at the start of ``epoch``, 1-based) and
    the share of the time budget used (``budget_minutes`` > 0, counted from this object's creation, as rank 0
    sees it under torchrun, so that every replica steps with the same rate), so a run stopped by either limit ends
    near a learning rate of 0. A resumed run's budget starts again (as ``TRAIN_BUDGET_MINUTES`` does): its rate
    rises back to that of its epoch.

    With ``cycles`` > 1 (``SNAPSHOT_CYCLES``, a snapshot ensemble) the epochs form that many equal cycles and the
    schedule starts again in each: the progress is that of the epochs within the current cycle.

    Args:
        optimizer: its parameter groups all get the scheduled rate.
        schedule: a name of :data:`LR_SCHEDULES`: ``"constant"`` (the rate is never changed) or ``"poly"``.
        base: the starting learning rate (``LEARNING_RATE``).
        epochs: ``EPOCHS``.
        budget_minutes: ``TRAIN_BUDGET_MINUTES`` (0: no budget; with ``cycles`` > 1 it must be 0).
        runtime: the device and, under torchrun, the process group the progress is broadcast in (None: one
            process).
        cycles: ``SNAPSHOT_CYCLES``, >= 1, dividing ``epochs``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: str, base: float, epochs: int,
                 budget_minutes: float, runtime: Runtime | None = None, cycles: int = 1):
        if cycles < 1 or epochs % cycles or (cycles > 1 and budget_minutes > 0):
            raise ValueError(f"SNAPSHOT_CYCLES={cycles}: expected 1, or a divisor of EPOCHS={epochs} without a time "
                             f"budget")
        self.optimizer, self.rate_at, self.base = optimizer, LR_SCHEDULES[schedule], base
        self.epochs, self.budget_seconds = epochs, 60.0 * budget_minutes
        self.cycle_epochs = epochs // cycles
        self.start = time.perf_counter()
        self.epoch = 1
        self.runtime = runtime

    def progress(self) -> float:
        """Share of the training done, in [0, 1]."""
        by_epochs = (self.epoch - 1) / self.epochs
        by_time = (time.perf_counter() - self.start) / self.budget_seconds if self.budget_seconds > 0 else 0.0
        if by_time and self.runtime is not None and self.runtime.distributed:
            shared = torch.tensor([by_time], dtype=torch.float64, device=collective_device())
            dist.broadcast(shared, src=0)
            by_time = float(shared.item())
        return min(1.0, max(by_epochs, by_time))

    def cycle_progress(self) -> float:
        """Share of the current cycle done, in [0, 1]: :meth:`progress` itself with one cycle."""
        if self.cycle_epochs == self.epochs:
            return self.progress()
        return ((self.epoch - 1) % self.cycle_epochs) / self.cycle_epochs  # whole epochs: no rounding at a restart

    def step(self) -> None:
        """Sets the rate for the next optimiser step (nothing for ``"constant"``)."""
        if self.rate_at is None:
            return
        rate = self.rate_at(self.base, self.cycle_progress())
        for group in self.optimizer.param_groups:
            group["lr"] = rate
