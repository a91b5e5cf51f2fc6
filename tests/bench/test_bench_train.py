"""bench/bench_train.py: its model step is the training step train.py takes (utils/train/session.py)."""

from __future__ import annotations

import pytest
import torch

from bench.bench_train import ModelStep
from utils.configuration import load_config
from utils.model.networks import NetworkSettings, unet_arguments
from utils.model.runtime import RuntimeSettings, select_runtime
from utils.train.loop import train_epoch
from utils.train import session
from utils.train.losses import LossSettings, make_loss
from utils.train.optimizers import weight_penalty

SMALL = ["PATCH_SHAPE=(96, 96)", "BATCH_SIZE=2", "DEVICE=cpu", "MIXED_PRECISION=False", "LEARNING_RATE=1e-2"]


@pytest.mark.parametrize("overrides", [[], ["OPTIMIZER=sgd", "LOSS=ce_dice"]])
def test_the_model_step_updates_the_weights_as_a_training_step_of_train_py(overrides):
    cfg = load_config(SMALL + overrides)
    runtime = select_runtime(RuntimeSettings.from_config(cfg))
    generator = torch.Generator().manual_seed(1)
    batch = (torch.rand(2, 3, 96, 96, generator=generator) * 2 - 1,
             torch.randint(0, cfg.N_CLASSES, (2, 96, 96), generator=generator))
    step = ModelStep(cfg, runtime)
    step(*batch)

    model_args = unet_arguments(NetworkSettings.from_config(cfg))
    torch.manual_seed(0)  # as ModelStep: the same initial weights
    state = session.build_training(cfg, model_args, runtime, None)
    penalty = weight_penalty(cfg.MODEL, cfg.L2_WEIGHT)
    train_epoch(state.model, [batch], state.optimizer, make_loss(LossSettings.from_config(cfg)), runtime,
                regulariser=lambda: penalty(state.model))

    assert type(step.optimizer) is type(state.optimizer)
    assert step.optimizer.param_groups[0]["lr"] == state.optimizer.param_groups[0]["lr"] == cfg.LEARNING_RATE
    ours, theirs = step.model.state_dict(), state.model.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[name], theirs[name]) for name in ours)
    torch.manual_seed(0)
    initial = session.build_training(cfg, model_args, runtime, None).model.state_dict()  # the step changed the weights
    assert any(not torch.equal(ours[name], initial[name]) for name in ours if ours[name].is_floating_point())
