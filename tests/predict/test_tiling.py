"""utils/predict/tiling.py: tile placement, blend weights, tiling settings, tiled against whole-image probabilities."""

import numpy as np
import pytest
import torch
from torch import nn

import config
from utils.model.runtime import Runtime
from utils.predict import tiling

CPU = Runtime(torch.device("cpu"), autocast_dtype=None, channels_last=False)
CPU_NHWC = Runtime(torch.device("cpu"), autocast_dtype=None, channels_last=True)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("length, tile, overlap", [(64, 64, 16), (160, 64, 16), (100, 32, 0), (97, 64, 63)])
def test_tiles_cover_everything_and_overlap_enough(length, tile, overlap):
    starts = tiling.tile_starts(length, tile, overlap)
    covered = np.zeros(length, int)
    for start in starts:
        covered[start:start + tile] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] + tile == max(length, tile)
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap


def test_blend_weights_ramp_over_the_overlap_and_stay_positive():
    weights = tiling.blend_weights((6, 8), overlap=2)
    assert weights.min() == pytest.approx(1 / 9) and weights.max() == 1.0
    np.testing.assert_allclose(weights[:, 3], [1 / 3, 2 / 3, 1, 1, 2 / 3, 1 / 3], rtol=1e-6)
    assert np.all(tiling.blend_weights((5, 5), overlap=0) == 1.0)


@pytest.mark.parametrize("tile_shape, overlap", [((64, 64), 16), ((32, 96), 0), ((64, 32), 24)])
def test_tiled_probabilities_equal_the_whole_image_for_a_pointwise_model(tile_shape, overlap):
    torch.manual_seed(0)
    model = nn.Conv2d(3, config.N_CLASSES, kernel_size=1).eval()  # each output pixel depends on its input pixel
    images = torch.randn(2, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        whole = tiling.sliding_window_probabilities(model, images, (96, 160), overlap, CPU)
        tiled = tiling.sliding_window_probabilities(model, images, tile_shape, overlap, CPU_NHWC)
    assert whole.shape == (2, config.N_CLASSES, 96, 160)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-6)


def test_tiling_settings_are_checked():
    assert tiling.check_tiling((64, 96), 16) == (64, 96)
    with pytest.raises(ValueError, match="multiples of 32"):
        tiling.check_tiling((64, 100), 16)
    with pytest.raises(ValueError, match="INFERENCE_TILE_OVERLAP must be in"):
        tiling.check_tiling((64, 64), 64)


class NanUnderAutocast(nn.Module):
    """A 1x1 convolution whose output is NaN when it runs under autocast, as oneDNN's bf16 convolutions sometimes
    are on AMX CPUs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, config.N_CLASSES, kernel_size=1)

    def forward(self, images):
        logits = self.conv(images)
        return logits * float("nan") if torch.is_autocast_enabled("cpu") else logits


def test_a_mixed_precision_pass_that_is_not_finite_is_done_again_in_float32():
    torch.manual_seed(0)
    model = NanUnderAutocast().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    bf16 = Runtime(torch.device("cpu"), autocast_dtype=torch.bfloat16, channels_last=False)
    with torch.inference_mode():
        probabilities = tiling.forward_probabilities(model, images, bf16)
        expected = torch.softmax(model.conv(images), dim=1)
    torch.testing.assert_close(probabilities, expected)
