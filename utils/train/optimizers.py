"""What optimises the segmenter: its optimiser (``OPTIMIZER``) and the penalty on its weights that training adds to
its loss (``L2_WEIGHT``), built the same way by train.py and bench/bench_train.py."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from utils.model.networks import MODELS

# OPTIMIZER -> the segmenter's optimiser, from its parameters and the config; the names are utils/configuration.py's
# CHOICES["OPTIMIZER"], checked there
OPTIMIZERS = {
    "adam": lambda parameters, cfg: torch.optim.Adam(parameters, lr=cfg.LEARNING_RATE, betas=tuple(cfg.ADAM_BETAS)),
    "sgd": lambda parameters, cfg: torch.optim.SGD(parameters, lr=cfg.LEARNING_RATE, momentum=cfg.SGD_MOMENTUM,
                                                   nesterov=True, weight_decay=cfg.WEIGHT_DECAY),
}


def make_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    """The segmenter's optimiser, as ``OPTIMIZER`` names it (:data:`OPTIMIZERS`), over all of ``model``'s
    parameters."""
    return OPTIMIZERS[cfg.OPTIMIZER](model.parameters(), cfg)


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
