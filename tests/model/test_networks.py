import pytest
import torch

from utils.model.checkpoints import load_checkpoint, save_checkpoint
from utils.model.networks import Discriminator, build_unet
from utils.train.loop import Adversary, adversarial_losses, one_hot

TINY_UNET = {"encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3, "classes": 4}


def test_unet_maps_images_to_class_logits():
    model = build_unet(TINY_UNET).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 32)).shape == (2, 4, 64, 32)


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


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = build_unet(TINY_UNET)
    save_checkpoint(tmp_path / "c.pt", {"model_args": TINY_UNET, "model_state": model.state_dict(), "epoch": 2,
                                        "config": {"PATCH_SHAPE": [256, 128]}})
    assert load_checkpoint(tmp_path / "c.pt")["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"bad\.pt: cannot load the checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: not a retouch checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
