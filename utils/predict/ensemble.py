"""Several trained networks segmenting as one: ``predict.py --checkpoint A.pt B.pt ...``.

Beyond the method (which segments with one network): the members' softmax probabilities are averaged, as nnU-Net
ensembles the models of its folds or configurations. Members must see their input alike, so every setting that
decides how a volume becomes the network's input (preprocessing, histogram reference, depth scale, classes) must be
equal; what they learned (network, encoder, loss, patch sampling, seed) may differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from utils.configuration import config_from_dict
from utils.model.checkpoints import MODEL_INPUT_SETTINGS
from utils.model.networks import output_margin
from utils.predict.tiling import input_multiple



def _comparable(value):
    """Lists and tuples compare alike (a checkpoint's config went through JSON)."""
    if isinstance(value, (list, tuple)):
        return tuple(_comparable(item) for item in value)
    if isinstance(value, dict):
        return {key: _comparable(item) for key, item in value.items()}
    return value


def check_members(paths: Sequence[Path], checkpoints: Sequence[dict]) -> None:
    """Raises ValueError naming the first member whose input settings or histogram reference differ from the
    first member's (``paths[i]`` is ``checkpoints[i]``'s file)."""
    # as each checkpoint's settings are used (a setting it predates takes the behaviour it was made with)
    first = vars(config_from_dict(checkpoints[0].get("config") or {}))
    first_counts = checkpoints[0].get("histogram_reference")
    for path, checkpoint in zip(paths[1:], checkpoints[1:]):
        config = vars(config_from_dict(checkpoint.get("config") or {}))
        for name in MODEL_INPUT_SETTINGS:
            if _comparable(config.get(name)) != _comparable(first.get(name)):
                raise ValueError(f"{path}: {name}={config.get(name)!r}, but {paths[0]} has {first.get(name)!r}; "
                                 f"the models of an ensemble must prepare their input alike")
        counts = checkpoint.get("histogram_reference")
        if (counts is None) != (first_counts is None) or (
                counts is not None and not np.array_equal(np.asarray(counts["counts"]),
                                                          np.asarray(first_counts["counts"]))):
            raise ValueError(f"{path}: another histogram reference than {paths[0]}'s; the models of an ensemble "
                             f"must prepare their input alike")


class ProbabilityEnsemble(nn.Module):
    """Networks whose outputs are averaged as probabilities.

    ``forward``: ``(n, 3, H, W)`` -> ``(n, C, H, W)`` float32 ``log(mean_m softmax(member_m(x)))``: logits whose
    softmax is the members' mean probability, so the inference code treats the ensemble as one network.

    Raises (constructor):
        ValueError: no member, or members with different output margins (an unpadded and a padded network).
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network")
        margins = sorted({output_margin(member) for member in members})
        if len(margins) > 1:
            raise ValueError(f"the networks' outputs lack {margins} pixels at their borders: an ensemble needs "
                             f"networks of one output size (all rmit_unet, or all padded networks)")
        self.members = nn.ModuleList(members)
        self.margin = margins[0]
        # the input sides every member takes (read by tiling.input_multiple)
        self.input_multiple = int(np.lcm.reduce([input_multiple(member) for member in members]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = sum(torch.softmax(member(images).float(), dim=1) for member in self.members) / len(self.members)
        return torch.log(mean.clamp_min(torch.finfo(torch.float32).tiny))
