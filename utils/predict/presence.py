"""Presence scores, for the detection ROC.

The **presence score** of a fluid in a volume is the largest probability ``p`` such that the fluid's softmax
probability is at least ``p`` over at least ``PRESENCE_MIN_VOLUME_MM3`` of the volume, i.e. the k-th largest
probability over all voxels with ``k = ceil(PRESENCE_MIN_VOLUME_MM3 / voxel volume)``
(:func:`presence_voxel_count`). It lies in [0, 1], grows with the network's confidence, ignores a few isolated
confident voxels, and means the same physical amount of fluid on every vendor. :class:`PresenceScores` computes it
as the probabilities stream, batch by batch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch


def presence_voxel_count(min_volume_mm3: float, voxel_volume_mm3: float, n_voxels: int) -> int:
    """``k`` of the presence score: ``ceil(min_volume_mm3 / voxel_volume_mm3)``, within ``[1, n_voxels]``.

    Raises:
        ValueError: a negative minimum volume or a voxel volume that is not positive.
    """
    if not min_volume_mm3 >= 0 or not voxel_volume_mm3 > 0:
        raise ValueError(f"PRESENCE_MIN_VOLUME_MM3 must be >= 0 and the voxel volume > 0, got {min_volume_mm3!r} "
                         f"and {voxel_volume_mm3!r} mm³")
    return int(min(max(1, math.ceil(min_volume_mm3 / voxel_volume_mm3 - 1e-9)), max(1, n_voxels)))


class PresenceScores:
    """Streaming presence scores: the ``k``-th largest probability of each fluid over all voxels seen.

    ``update`` with each batch of probabilities; ``scores`` at the end. Keeps only the ``k`` largest values per
    fluid, on the probabilities' device. When fewer than ``k`` voxels were seen, the smallest of them is the score.
    """

    def __init__(self, fluids: Mapping[str, int], k: int):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.fluids, self.k = dict(fluids), int(k)
        self._top: dict[str, torch.Tensor | None] = {name: None for name in self.fluids}

    def update(self, probabilities: torch.Tensor) -> None:
        """Takes ``(n, C, ...)`` probabilities; channel ``code`` of each fluid is used."""
        for name, code in self.fluids.items():
            values = probabilities[:, code].reshape(-1)
            top = self._top[name]
            if top is not None:
                if top.numel() >= self.k:
                    values = values[values > top[-1]]  # cheap filter before the sort
                values = torch.cat([top, values])
            self._top[name] = torch.topk(values, min(self.k, values.numel())).values  # sorted, largest first

    def scores(self) -> dict[str, float]:
        """Fluid name -> score in [0, 1]; 0.0 for a fluid when nothing was seen."""
        return {name: float(np.clip(top[-1].item(), 0.0, 1.0)) if top is not None and top.numel() else 0.0
                for name, top in self._top.items()}
