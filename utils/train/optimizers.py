"""What optimises the segmenter: its optimiser (``OPTIMIZER``) and the penalty on its weights that training adds to
its loss (``L2_WEIGHT``), built the same way by train.py and bench/bench_train.py."""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import nn

import config
from utils.model.networks import MODELS
from utils.stage_settings import settings_from_config


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
    """What :func:`make_optimizer` reads of the config, built once per run (:meth:`from_config`). Each field is the
    config.py setting of the same name in upper case (see config.py for its meaning); the defaults are config.py's, so
    a test names only what it changes.

    Attributes:
        optimizer: ``OPTIMIZER``, a name in :data:`OPTIMIZERS` (``"adam"``, ``"sgd"``).
        learning_rate: ``LEARNING_RATE``, the (initial) rate, > 0.
        adam_betas: ``ADAM_BETAS``, Adam's ``(beta1, beta2)`` ("adam" only).
        sgd_momentum: ``SGD_MOMENTUM``, the Nesterov momentum ("sgd" only).
        weight_decay: ``WEIGHT_DECAY``, SGD's weight decay ("sgd" only).
    """

    optimizer: str = config.OPTIMIZER
    learning_rate: float = config.LEARNING_RATE
    adam_betas: tuple[float, float] = config.ADAM_BETAS
    sgd_momentum: float = config.SGD_MOMENTUM
    weight_decay: float = config.WEIGHT_DECAY

    @classmethod
    def from_config(cls, cfg) -> OptimizerSettings:
        """The optimiser settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg)


# OPTIMIZER -> the segmenter's optimiser, from its parameters and the OptimizerSettings; the names are
# utils/configuration.py's CHOICES["OPTIMIZER"], checked there
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adam": lambda parameters, settings: torch.optim.Adam(parameters, lr=settings.learning_rate,
                                                          betas=tuple(settings.adam_betas)),
    "sgd": lambda parameters, settings: torch.optim.SGD(parameters, lr=settings.learning_rate,
                                                        momentum=settings.sgd_momentum, nesterov=True,
                                                        weight_decay=settings.weight_decay),
}


def make_optimizer(model: nn.Module, settings: OptimizerSettings) -> torch.optim.Optimizer:
    """The segmenter's optimiser, as ``settings.optimizer`` (``OPTIMIZER``) names it (:data:`OPTIMIZERS`), over all
    of ``model``'s parameters."""
    return OPTIMIZERS[settings.optimizer](model.parameters(), settings)


def weight_penalty(model_name: str, l2_weight: float) -> Callable[[nn.Module], torch.Tensor | float]:
    """The penalty on a network's weights that training adds to its loss each step.

    Args:
        model_name: ``MODEL``; its network's ``weight_penalty`` (rmit_unet: the authors' L2 on its kernels,
            :data:`utils.model.networks.MODELS`) is used.
        l2_weight: ``L2_WEIGHT``, the penalty's factor.

    Returns:
        ``model -> penalty``: a 0-d tensor, or 0.0 where the network has no penalty or ``l2_weight`` is 0.
    """
    penalty = MODELS[model_name].weight_penalty
    if penalty is None or not l2_weight:
        return lambda model: 0.0
    return lambda model: penalty(model, l2_weight)
