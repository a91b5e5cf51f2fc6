"""utils/model/full_resolution.py: smp's U-Net with a skip from the input at full resolution (FULL_RESOLUTION_CHANNELS):
its arguments, what its last decoder block sees, a training step, a checkpoint and the folded inference network."""

import pytest
import torch

from utils.configuration import load_config
from utils.errors import ConfigError
from utils.model.checkpoints import make_checkpoint, model_from_checkpoint
from utils.model.full_resolution import FullResolutionUnet
from utils.model.networks import NetworkSettings, build_unet, fold_batch_norms, network_label, unet_arguments
from utils.model.runtime import RuntimeSettings, select_runtime
from utils.train.loop import train_step
from utils.train.losses import LossSettings, make_loss

SETTINGS = NetworkSettings(model="smp_unet", full_resolution_channels=6, decoder_channels=(32, 16, 16, 8, 8))
IMAGES = torch.linspace(-1, 1, 2 * 3 * 64 * 96).reshape(2, 3, 64, 96)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_setting_builds_the_network_and_a_default_model_keeps_its_arguments():
    model_args = unet_arguments(SETTINGS)
    assert model_args["full_resolution_channels"] == 6
    assert "full_resolution_channels" not in unet_arguments(NetworkSettings(model="smp_unet"))  # old checkpoints
    assert network_label(model_args) == "smp_unet (resnet18, decoder (32, 16, 16, 8, 8), full-resolution skip of 6)"
    model = build_unet(model_args)
    assert isinstance(model, FullResolutionUnet)
    last = model.decoder.blocks[-1]
    assert last.conv1[0].in_channels == 8 + 6  # the previous block's 8 channels and the stem's 6
    with torch.no_grad():
        assert model.eval()(IMAGES).shape == (2, 4, 64, 96)


def test_the_stems_features_reach_the_logits():
    """The last decoder block draws on the stem: changing the stem's weights changes the logits, and both of its
    convolutions take a gradient from them."""
    torch.manual_seed(0)
    model = build_unet(unet_arguments(SETTINGS)).eval()
    with torch.no_grad():
        before = model(IMAGES)
        model.stem[1][0].weight.mul_(2.0)
        assert not torch.allclose(model(IMAGES), before)
    model(IMAGES).square().sum().backward()
    assert all(float(model.stem[index][0].weight.grad.abs().sum()) > 0 for index in (0, 1))


def test_a_training_step_trains_the_stem_and_a_checkpoint_and_the_folded_network_segment_the_same():
    runtime = select_runtime(RuntimeSettings(device="cpu", mixed_precision=False))
    torch.manual_seed(0)
    model_args = unet_arguments(SETTINGS)
    model = build_unet(model_args)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    stem_before = model.stem[0][0].weight.detach().clone()
    masks = torch.zeros(2, 64, 96, dtype=torch.long)
    masks[:, 20:40, 30:60] = 1
    loss = train_step(model.train(), (IMAGES, masks), optimizer, make_loss(LossSettings(loss="ce_dice")), runtime)
    assert torch.isfinite(loss)
    assert not torch.equal(stem_before, model.stem[0][0].weight)
    restored = model_from_checkpoint(make_checkpoint(model_args, model, optimizer, 1, {}, {}, 0.0, None))
    with torch.no_grad():
        expected = model.eval()(IMAGES)
        assert torch.equal(restored(IMAGES), expected)
        folded = fold_batch_norms(restored)
        assert not any(isinstance(module, torch.nn.BatchNorm2d) for module in folded.stem.modules())
        torch.testing.assert_close(folded(IMAGES), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("overrides, expected", [
    (["FULL_RESOLUTION_CHANNELS=16"], "^FULL_RESOLUTION_CHANNELS=16: expected 0 with MODEL='rmit_unet'"),
    (["MODEL=smp_unet", "DEEP_SUPERVISION=True", "FULL_RESOLUTION_CHANNELS=16"],
     "^FULL_RESOLUTION_CHANNELS=16: expected 0 with MODEL='smp_unet' and DEEP_SUPERVISION=True"),
    (["MODEL=smp_unet", "FULL_RESOLUTION_CHANNELS=-1"], "^FULL_RESOLUTION_CHANNELS=-1: expected a channel count >= 0"),
])
def test_the_config_refuses_a_skip_the_network_cannot_take(overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(overrides)
    assert load_config(["MODEL=smp_unet", "FULL_RESOLUTION_CHANNELS=16"]).FULL_RESOLUTION_CHANNELS == 16
