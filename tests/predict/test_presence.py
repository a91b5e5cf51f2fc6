"""utils/predict/presence.py: the presence score's voxel count and its streaming k-th largest probability."""

import pytest
import torch

from utils.predict import presence


@pytest.mark.parametrize("min_volume, voxel, n, expected", [
    (0.001, 1e-6, 10**6, 1000), (0.001, 3e-4, 100, 4), (0.0, 1e-6, 10, 1), (1.0, 1e-6, 10, 10)])
def test_presence_voxel_count(min_volume, voxel, n, expected):
    assert presence.presence_voxel_count(min_volume, voxel, n) == expected


def test_presence_score_is_the_kth_largest_probability_over_all_batches():
    fluids = {"IRF": 1, "SRF": 2}

    def batch(irf, srf):  # (n=1, C=3, 1, len) with background chosen so nothing matters but the fluid channels
        return torch.tensor([[[irf], [irf], [srf]]], dtype=torch.float32).reshape(1, 3, 1, -1)

    scores = presence.PresenceScores(fluids, k=2)
    scores.update(batch([0.1, 0.9, 0.5], [0.0, 0.0, 0.3]))
    scores.update(batch([0.7, 0.2, 0.0], [0.0, 0.0, 0.0]))
    assert scores.scores() == pytest.approx({"IRF": 0.7, "SRF": 0.0})
    few = presence.PresenceScores(fluids, k=10)  # more than all voxels: the smallest
    few.update(batch([0.4, 0.6], [0.2, 0.8]))
    assert few.scores() == pytest.approx({"IRF": 0.4, "SRF": 0.2})
    assert presence.PresenceScores(fluids, k=3).scores() == {"IRF": 0.0, "SRF": 0.0}
