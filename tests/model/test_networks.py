"""utils/model: the network the config describes, checkpoints round trip, the discriminator."""

import dataclasses
import math

import numpy as np

import pytest
import torch

import config
from utils.configuration import load_config
from utils.errors import ConfigError
from utils.model.checkpoints import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from utils.model.networks import (MODELS, SMP_DECODER_CHANNELS, Discriminator, NetworkSettings, build_unet,
                                  fold_batch_norms, network_label, network_setting_names, output_margin,
                                  unet_arguments)
from utils.model.rmit_unet import l2_penalty
from utils.train.loop import Adversary, adversarial_losses, one_hot

# A 3-level smp U-Net with a narrow decoder: the same code paths as a full one at a tenth of its size.
TINY_UNET = {"name": "smp_unet", "encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3, "classes": 4,
             "encoder_depth": 3, "decoder_channels": [16, 8, 4]}
IMAGES = torch.linspace(-1, 1, 2 * 3 * 64 * 32).reshape(2, 3, 64, 32)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_smp_network_is_the_one_the_config_describes():
    settings = NetworkSettings.from_config(load_config(["MODEL=smp_unet", "ENCODER=resnet34", "N_CLASSES=5"]))
    assert settings == NetworkSettings(model="smp_unet", encoder="resnet34", n_classes=5)
    model_args = unet_arguments(settings)
    assert model_args["encoder_weights"] is None  # random initialisation: nothing is downloaded
    model = build_unet(model_args).eval()
    assert model.name == "u-resnet34"
    assert model.encoder.conv1.in_channels == 3  # a B-scan and its two neighbours
    with torch.no_grad():
        assert model(IMAGES).shape == (2, 5, 64, 32)  # N_CLASSES logits per pixel, as large as the input


@pytest.mark.parametrize("relu", [True, False])
def test_the_authors_network_is_the_one_the_config_describes(relu):
    model_args = unet_arguments(NetworkSettings(model="rmit_unet", n_classes=5, relu_before_softmax=relu))
    assert model_args["relu_before_softmax"] is relu
    torch.manual_seed(0)
    model = build_unet(model_args).eval()
    with torch.no_grad():
        logits = model(torch.linspace(-1, 1, 3 * 96 * 104).reshape(1, 3, 96, 104))
    margin = output_margin(model)
    assert margin > 0 and logits.shape == (1, 5, 96 - 2 * margin, 104 - 2 * margin)  # unpadded: a smaller map
    assert bool((logits < 0).any()) is not relu  # the ReLU on the logits is there when, and only when, asked for


def test_each_network_says_what_training_asks_of_it():
    """What train.py asks the network instead of comparing names: the patch shapes it takes, its weight penalty
    and its label in the log."""
    rmit, smp_unet = MODELS["rmit_unet"], MODELS["smp_unet"]
    assert rmit.accepts_patch((256, 128)) and rmit.accepts_patch((96, 96))
    assert not rmit.accepts_patch((100, 128)) and not rmit.accepts_patch((88, 128))
    assert rmit.patch_rule == "sides that are multiples of 8 and at least 96, e.g. (256, 128)"
    assert smp_unet.accepts_patch((100, 128))  # not checked before training
    assert rmit.weight_penalty is l2_penalty and smp_unet.weight_penalty is None
    assert network_label(unet_arguments(NetworkSettings(model="rmit_unet"))) == "rmit_unet"
    assert network_label(unet_arguments(NetworkSettings(model="smp_unet", encoder="resnet34"))) == "smp_unet (resnet34)"
    unnamed = {key: value for key, value in TINY_UNET.items() if key != "name"}  # a checkpoint from before MODEL
    assert network_label(unnamed) == "smp_unet (resnet18, decoder (16, 8, 4))"


def test_decoder_channels_narrow_the_smp_decoder_and_are_left_out_of_a_default_models_arguments():
    """DECODER_CHANNELS: smp's default is not written into the arguments, so a default model's checkpoint is one
    made before the setting existed (--init-from and ensembles compare them)."""
    assert "decoder_channels" not in unet_arguments(NetworkSettings(model="smp_unet"))
    narrow = unet_arguments(NetworkSettings(model="smp_unet", decoder_channels=(128, 64, 32, 16, 8)))
    assert narrow["decoder_channels"] == [128, 64, 32, 16, 8]
    model = build_unet(narrow).eval()
    assert model.segmentation_head[0].in_channels == 8
    with torch.no_grad():
        assert model(IMAGES).shape == (2, 4, 64, 32)
    assert network_label(narrow) == "smp_unet (resnet18, decoder (128, 64, 32, 16, 8))"


def test_decoder_attention_adds_scse_to_each_decoder_block_and_is_left_out_when_off():
    """DECODER_ATTENTION="scse": smp's squeeze-and-excitation in every decoder block (a default model's arguments,
    and so its checkpoints, are unchanged); deep supervision builds on the same decoder."""
    assert "decoder_attention_type" not in unet_arguments(NetworkSettings(model="smp_unet"))
    for deep_supervision in (False, True):
        arguments = unet_arguments(NetworkSettings(model="smp_unet", decoder_attention="scse",
                                                   decoder_channels=(64, 32, 32, 16, 16),
                                                   deep_supervision=deep_supervision))
        model = build_unet(arguments).eval()
        attention = [module for module in model.decoder.modules() if type(module).__name__ == "SCSEModule"]
        assert len(attention) == 2 * len(model.decoder.blocks)  # after the merge and after the second conv
        with torch.no_grad():
            assert model(IMAGES).shape == (2, 4, 64, 32)
    assert network_label(arguments) == ("smp_unet (resnet18, decoder (64, 32, 32, 16, 16), scse attention, "
                                        "deep supervision)")
    with pytest.raises(ConfigError, match="DECODER_ATTENTION"):
        load_config(["DECODER_ATTENTION=cbam"])


def test_instance_normalization_replaces_every_batch_norm_and_normalises_each_image_by_itself():
    """NORMALIZATION="instance": no batch norm is left in smp_unet (deep supervision too), a default model's arguments
    are unchanged, and an image's output does not depend on the other images of its batch, in training as at
    inference (no batch or running statistics)."""
    assert "normalization" not in unet_arguments(NetworkSettings(model="smp_unet"))
    for deep_supervision in (False, True):
        arguments = unet_arguments(NetworkSettings(model="smp_unet", normalization="instance",
                                                   deep_supervision=deep_supervision))
        model = build_unet(arguments)
        kinds = {type(module).__name__ for module in model.modules()}
        assert "BatchNorm2d" not in kinds and "InstanceNorm2d" in kinds
        norms = [module for module in model.modules() if isinstance(module, torch.nn.InstanceNorm2d)]
        assert all(norm.affine and not norm.track_running_stats for norm in norms)
    assert network_label(arguments) == "smp_unet (resnet18, deep supervision, instance norm)"
    model = build_unet(unet_arguments(NetworkSettings(model="smp_unet", normalization="instance"))).train()
    images = torch.randn(2, 3, 128, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        alone = model(images[:1])
        beside_another = model(images)[:1]
        assert torch.allclose(alone, beside_another, atol=1e-4)  # batched convolutions round otherwise
        assert torch.allclose(model.eval()(images[:1]), alone, atol=1e-4)
    with pytest.raises(ConfigError, match="^NORMALIZATION='instance': expected 'batch' with MODEL='rmit_unet'"):
        load_config(["NORMALIZATION=instance"])
    assert load_config(["MODEL=smp_unet", "NORMALIZATION=instance"]).NORMALIZATION == "instance"
    with pytest.raises(ConfigError, match="^NORMALIZATION='group': expected 'batch'"):
        load_config(["MODEL=smp_unet", "NORMALIZATION=group"])
    from utils.model.networks import NORMALIZATIONS
    for name in NORMALIZATIONS:
        assert load_config(["MODEL=smp_unet", f"NORMALIZATION={name}"]).NORMALIZATION == name


def test_a_network_is_built_from_the_settings_it_names_and_no_other():
    """``network_setting_names`` (what train.py --resume keeps of a run's network) lists exactly the settings a
    network's constructor arguments change with."""
    assert network_setting_names("rmit_unet") == ("MODEL", "N_CLASSES", "RELU_BEFORE_SOFTMAX", "BN_MOMENTUM")
    assert network_setting_names("smp_unet") == ("MODEL", "ENCODER", "N_CLASSES", "DECODER_CHANNELS",
                                                 "DECODER_ATTENTION", "DEEP_SUPERVISION", "NORMALIZATION",
                                                 "FULL_RESOLUTION_CHANNELS")
    changed = {"n_classes": 5, "encoder": "resnet34", "relu_before_softmax": False, "bn_momentum": 0.5,
               "decoder_channels": (128, 64, 32, 16, 8), "decoder_attention": "scse", "deep_supervision": True,
               "normalization": "instance", "full_resolution_channels": 16}
    for model in MODELS:
        base = NetworkSettings(model=model)
        differ = [name.upper() for name, value in changed.items()
                  if unet_arguments(dataclasses.replace(base, **{name: value})) != unet_arguments(base)]
        assert set(differ) == set(network_setting_names(model)) - {"MODEL"}


def test_a_checkpoint_naming_an_unknown_network_is_refused():
    with pytest.raises(ValueError, match="unknown network 'vnet' in the model arguments; expected one of rmit_unet, "
                                         "smp_unet"):
        build_unet({"name": "vnet"})
    with pytest.raises(ValueError, match="^the checkpoint's network cannot be built \\(unknown network 'vnet'"):
        model_from_checkpoint({"model_args": {"name": "vnet"}, "model_state": {}})


def _trained_state(seed=0):
    """A tiny U-Net, an Adam optimiser and a discriminator after one step each (so every state is non-trivial)."""
    torch.manual_seed(seed)
    model = build_unet(TINY_UNET)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    critic = Discriminator(n_classes=4)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    model(IMAGES).mean().backward()
    optimizer.step()
    critic(IMAGES, torch.zeros(2, 4, 64, 32)).mean().backward()
    critic_optimizer.step()
    return model, optimizer, critic, critic_optimizer


def test_checkpoint_round_trip_rebuilds_the_same_model(tmp_path):
    model, optimizer, critic, critic_optimizer = _trained_state()
    reference = {"path": "x/oct.mhd", "vendor": "Spectralis", "counts": list(range(256))}
    checkpoint = make_checkpoint(TINY_UNET, model, optimizer, 3, {"PATCH_SHAPE": [256, 128]},
                                 {"val_loss": torch.tensor(0.25), "dice_mean_fluid": math.nan}, 0.7, reference,
                                 critic, critic_optimizer)
    save_checkpoint(tmp_path / "best.pt", checkpoint)
    assert [path.name for path in tmp_path.iterdir()] == ["best.pt"]  # no temporary file left

    loaded = load_checkpoint(tmp_path / "best.pt")  # weights_only: plain data, no pickled code
    assert loaded["epoch"] == 3 and loaded["best_score"] == 0.7 and loaded["config"] == {"PATCH_SHAPE": [256, 128]}
    assert loaded["metrics"]["val_loss"] == 0.25 and isinstance(loaded["metrics"]["val_loss"], float)
    assert math.isnan(loaded["metrics"]["dice_mean_fluid"])
    assert loaded["histogram_reference"] == reference and loaded["model_args"] == TINY_UNET
    rebuilt = model_from_checkpoint(loaded)
    assert not rebuilt.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[name], tensor), name
    with torch.no_grad():
        assert torch.equal(rebuilt(IMAGES), model.eval()(IMAGES))

    # The optimisers resume where they were: their states load into fresh ones and match.
    fresh = torch.optim.Adam(build_unet(TINY_UNET).parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer_state"])
    assert fresh.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"] == 1
    fresh_critic = Discriminator(n_classes=4)
    fresh_critic.load_state_dict(loaded["discriminator_state"])
    assert all(torch.equal(fresh_critic.state_dict()[k], v) for k, v in critic.state_dict().items())
    assert loaded["discriminator_optimizer_state"]["state"]


def test_checkpoint_without_adversary_has_no_discriminator_entries():
    model, optimizer, _, _ = _trained_state()
    checkpoint = make_checkpoint(TINY_UNET, model, optimizer, 1, {}, {}, 0.0, None)
    assert "discriminator_state" not in checkpoint and checkpoint["histogram_reference"] is None


def test_damaged_foreign_and_missing_checkpoints_are_refused(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pt: cannot load the checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    model, optimizer, _, _ = _trained_state()
    save_checkpoint(tmp_path / "cut.pt", make_checkpoint(TINY_UNET, model, optimizer, 1, {}, {}, 0.0, None))
    data = (tmp_path / "cut.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])  # an interrupted copy
    with pytest.raises(ValueError, match=r"cut\.pt: cannot load the checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a retouch checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: not a retouch checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_discriminator_scores_pairs_of_any_size():
    critic = Discriminator(n_classes=4)
    assert critic(torch.zeros(3, 3, 64, 32), torch.zeros(3, 4, 64, 32)).shape == (3,)
    assert critic(torch.zeros(1, 3, 128, 64), torch.zeros(1, 4, 128, 64)).shape == (1,)


def test_adversarial_loss_passes_gradient_to_the_segmenter_only_through_probabilities():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 32, 32)
    masks = torch.randint(0, 4, (2, 32, 32))
    logits = torch.randn(2, 4, 32, 32, requires_grad=True)
    critic = Discriminator(4)
    adversary = Adversary(critic, torch.optim.Adam(critic.parameters()), weight=0.1)
    discriminator_loss, segmenter_loss = adversarial_losses(adversary, images, logits, masks)
    (grad,) = torch.autograd.grad(segmenter_loss, logits, retain_graph=True)
    assert grad.abs().sum() > 0  # arg-max one-hot (the original) would give none
    (no_grad,) = torch.autograd.grad(discriminator_loss, logits, allow_unused=True)
    assert no_grad is None  # the discriminator's loss does not train the segmenter


def test_one_hot():
    labels = torch.tensor([[[0, 3], [1, 2]]])
    encoded = one_hot(labels, 4)
    assert encoded.shape == (1, 4, 2, 2) and torch.equal(encoded.argmax(dim=1), labels)


@pytest.mark.parametrize("content", ["random", "pickled_code"])
def test_refused_checkpoint_never_advises_weights_only_false(tmp_path, capfd, content):
    import collections
    import pickle

    path = tmp_path / "x.pt"
    if content == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    else:  # a plain pickle naming a class: the safe unpickler refuses it, torch's text says weights_only=False
        path.write_bytes(pickle.dumps({"model_args": collections.OrderedDict}))
    with pytest.raises(ValueError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: cannot load the checkpoint") and "\n" not in message
    assert "weights_only" not in message.lower() and "False" not in message
    assert "weights_only" not in capfd.readouterr().err  # nor in a warning


def test_the_authors_critic_passes_gradient_to_the_segmenter_and_crops_the_image():
    from utils.model.networks import RmitCritic

    torch.manual_seed(0)
    images = torch.randn(1, 3, 256, 128)  # the patch; the segmenter's output is its 164x36 centre
    masks = torch.randint(0, 4, (1, 164, 36))
    logits = torch.randn(1, 4, 164, 36, requires_grad=True)
    critic = RmitCritic(4).eval()
    adversary = Adversary(critic, torch.optim.Adam(critic.parameters()), weight=1.0)
    _, segmenter_loss = adversarial_losses(adversary, images, logits, masks)
    (grad,) = torch.autograd.grad(segmenter_loss, logits)
    assert grad.abs().sum() > 0
    two_way = critic.net(images[..., 46:-46, 46:-46], logits.softmax(1))
    assert critic(images, logits.softmax(1)).item() == pytest.approx((two_way[0, 1] - two_way[0, 0]).item(), abs=1e-5)


def test_bn_momentum_reaches_every_batch_norm_of_the_authors_network():
    model = build_unet(unet_arguments(NetworkSettings(model="rmit_unet", bn_momentum=0.1)))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.1 for m in norms)
    default = build_unet(unet_arguments(NetworkSettings(model="rmit_unet")))
    assert all(m.momentum == 0.01 for m in default.modules() if isinstance(m, torch.nn.BatchNorm2d))  # Keras 0.99


def test_folding_batch_norms_keeps_the_eval_outputs():
    torch.manual_seed(0)
    model = build_unet(unet_arguments(NetworkSettings(model="rmit_unet")))
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 96, 104))  # running statistics away from their start values
    model.eval()
    for module in model.modules():  # and a non-trivial affine map
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    images = torch.randn(1, 3, 96, 104)
    with torch.no_grad():
        expected = model(images)
        folded = fold_batch_norms(model)
        assert folded is model and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        torch.testing.assert_close(folded(images), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(build_unet(unet_arguments(NetworkSettings(model="rmit_unet"))).train())


def test_config_decoder_channels_are_smps_default():
    """A default config builds smp's own U-Net, whose checkpoints omit decoder_channels."""
    import inspect

    import segmentation_models_pytorch as smp

    assert SMP_DECODER_CHANNELS == tuple(inspect.signature(smp.Unet).parameters["decoder_channels"].default)
    assert tuple(config.DECODER_CHANNELS) == SMP_DECODER_CHANNELS
