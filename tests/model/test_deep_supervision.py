"""utils/model/deep_supervision.py: the heads' outputs in training, the plain network in eval mode, the weighted loss,
and a training step and checkpoint with it."""

import pytest
import torch

from utils.model.checkpoints import make_checkpoint, model_from_checkpoint
from utils.model.deep_supervision import (DeepOutputs, DeepSupervisedUnet, deep_supervision_loss,
                                          deep_supervision_weights)
from utils.model.networks import NetworkSettings, build_unet, network_label, unet_arguments
from utils.model.runtime import RuntimeSettings, select_runtime
from utils.train.loop import train_step
from utils.train.losses import LossSettings, make_loss

SETTINGS = NetworkSettings(model="smp_unet", deep_supervision=True, decoder_channels=(32, 16, 16, 8, 8))
IMAGES = torch.linspace(-1, 1, 2 * 3 * 64 * 96).reshape(2, 3, 64, 96)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_gives_three_coarser_outputs_and_eval_the_plain_logits():
    model_args = unet_arguments(SETTINGS)
    assert model_args["deep_supervision"] is True
    assert "deep_supervision" not in unet_arguments(NetworkSettings(model="smp_unet"))  # old checkpoints: the default
    assert network_label(model_args) == "smp_unet (resnet18, decoder (32, 16, 16, 8, 8), deep supervision)"
    torch.manual_seed(0)
    model = build_unet(model_args)
    assert isinstance(model, DeepSupervisedUnet)
    outputs = model.train()(IMAGES)
    assert isinstance(outputs, DeepOutputs) and outputs.main.shape == (2, 4, 64, 96)
    assert [tuple(logits.shape) for logits in outputs.auxiliary] == [(2, 4, 32, 48), (2, 4, 16, 24), (2, 4, 8, 12)]
    with torch.no_grad():
        plain = model.eval()(IMAGES)
    assert isinstance(plain, torch.Tensor) and plain.shape == (2, 4, 64, 96)
    # the same weights without the heads: the same logits (the heads add nothing at inference)
    other = build_unet({key: value for key, value in model_args.items() if key != "deep_supervision"}).eval()
    other.load_state_dict({key: value for key, value in model.state_dict().items()
                           if not key.startswith("auxiliary_heads.")})
    with torch.no_grad():
        assert torch.equal(other(IMAGES), plain)


def test_the_loss_weighs_each_coarser_output_half_as_much():
    assert deep_supervision_weights(3) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15])
    masks = torch.zeros(1, 8, 8, dtype=torch.long)
    masks[:, :4, :4] = 1
    masks[:, 1, 1] = masks[:, 2, 2] = 255  # IGNORE_LABEL survives the resizing (each block's middle pixel is taken)
    seen = []

    def recording_loss(logits, targets):
        seen.append(targets)
        return torch.tensor(float(logits.shape[-1]))

    auxiliary = (torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 2, 2))
    total = deep_supervision_loss(torch.tensor(8.0), auxiliary, masks, recording_loss)
    weights = deep_supervision_weights(2)
    assert float(total) == pytest.approx(weights[0] * 8 + weights[1] * 4 + weights[2] * 2)
    assert seen[0].tolist() == [[[255, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]  # rows, columns 1 3 5 7
    assert seen[1].tolist() == [[[255, 0], [0, 0]]]  # rows, columns 2 6


def test_a_copy_of_the_network_keeps_its_own_outputs():
    """A moving average of the weights (AveragedModel: a deep copy) runs in train mode for the batch-norm
    re-estimation; its hooks must fill its own blocks, not the original's."""
    from torch.optim.swa_utils import AveragedModel

    model = build_unet(unet_arguments(SETTINGS))
    average = AveragedModel(model).module.train()
    outputs = average(IMAGES)
    assert isinstance(outputs, DeepOutputs) and len(outputs.auxiliary) == 3
    assert all(getattr(block, "supervised_output", None) is None for block in model.decoder.blocks)
    assert all(getattr(block, "supervised_output", None) is None for block in average.decoder.blocks)


def test_a_training_step_trains_the_heads_and_a_checkpoint_segments_without_them():
    runtime = select_runtime(RuntimeSettings(device="cpu", mixed_precision=False))
    torch.manual_seed(0)
    model_args = unet_arguments(SETTINGS)
    model = build_unet(model_args)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    heads_before = [head.weight.detach().clone() for head in model.auxiliary_heads]
    masks = torch.zeros(2, 64, 96, dtype=torch.long)
    masks[:, 20:40, 30:60] = 1
    loss_fn = make_loss(LossSettings(loss="ce_dice"))
    loss = train_step(model.train(), (IMAGES, masks), optimizer, loss_fn, runtime)
    assert torch.isfinite(loss)  # the full output's loss, as validation's
    assert all(not torch.equal(before, head.weight) for before, head in zip(heads_before, model.auxiliary_heads))
    checkpoint = make_checkpoint(model_args, model, optimizer, 1, {}, {}, 0.0, None)
    restored = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        assert torch.equal(restored(IMAGES), model.eval()(IMAGES))


def test_init_from_crosses_deep_supervision_both_ways(tmp_path):
    from utils.configuration import ConfigError, load_config
    from utils.model.checkpoints import save_checkpoint
    from utils.train import session

    small = ["MODEL=smp_unet", "DECODER_CHANNELS=(32, 16, 16, 8, 8)", "PATCH_SHAPE=(64, 96)", "PATCH_BORDER=8",
             "DEVICE=cpu", "MIXED_PRECISION=False"]
    runtime = select_runtime(RuntimeSettings(device="cpu", mixed_precision=False))
    saved = {}
    for name, extra in (("plain", []), ("deep", ["DEEP_SUPERVISION=True"])):
        cfg = load_config(small + extra)
        model_args = unet_arguments(NetworkSettings.from_config(cfg))
        torch.manual_seed(len(name))
        state = session.build_training(cfg, model_args, runtime, None)
        saved[name] = (cfg, model_args, state.model.state_dict())
        save_checkpoint(tmp_path / f"{name}.pt", make_checkpoint(model_args, state.model, state.optimizer, 1,
                                                                 {"PATCH_SHAPE": [64, 96]}, {}, 0.0, None))
    for source, target in (("plain", "deep"), ("deep", "plain"), ("deep", "deep")):
        cfg, model_args, _ = saved[target]
        weights = session.initial_weights(tmp_path / f"{source}.pt", model_args, (64, 96))
        model = session.build_training(cfg, model_args, runtime, None, weights).model.state_dict()
        source_state = saved[source][2]
        shared = [key for key in model if not key.startswith("auxiliary_heads.")]
        assert all(torch.equal(model[key], source_state[key]) for key in shared), (source, target)
        heads = [key for key in model if key.startswith("auxiliary_heads.")]
        assert bool(heads) == (target == "deep")
        if source == "deep" and target == "deep":  # its trained heads are kept
            assert all(torch.equal(model[key], source_state[key]) for key in heads)
    other = unet_arguments(NetworkSettings.from_config(load_config(small + ["DECODER_CHANNELS=(32, 16, 16, 8, 4)"])))
    with pytest.raises(ConfigError, match="plain.pt: --init-from needs a checkpoint of the same network"):
        session.initial_weights(tmp_path / "plain.pt", other, (64, 96))
