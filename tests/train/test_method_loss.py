"""Hand-computed cases for utils/train/method_loss.py (the authors' loss, custom_networks.py in RuwanT/retouch)."""

import math

import numpy as np
import pytest
import torch

from utils.train.method_loss import KERAS_EPSILON, RmitLoss, fluid_dice_loss, rmit_loss

EPS = 1e-7  # written out, not imported: Keras' default epsilon

# Two 2x3 images, 4 classes. Image 0 holds background, IRF and SRF (PED absent); image 1 holds background and PED
# (IRF and SRF absent).
TARGET = [[[0, 0, 1],
           [0, 2, 1]],
          [[0, 0, 0],
           [0, 3, 3]]]
# PROBS[b][y][x] = (p0, p1, p2, p3), each summing to 1.
PROBS = [[[(0.7, 0.1, 0.1, 0.1), (0.4, 0.3, 0.2, 0.1), (0.2, 0.5, 0.2, 0.1)],
          [(0.6, 0.2, 0.1, 0.1), (0.3, 0.1, 0.5, 0.1), (0.1, 0.6, 0.2, 0.1)]],
         [[(0.9, 0.05, 0.03, 0.02), (0.5, 0.2, 0.2, 0.1), (0.25, 0.25, 0.25, 0.25)],
          [(0.8, 0.1, 0.05, 0.05), (0.3, 0.1, 0.1, 0.5), (0.6, 0.1, 0.1, 0.2)]]]


def hand_case():
    """(logits, target) whose softmax is PROBS: the logits are log PROBS."""
    logits = torch.tensor(PROBS, dtype=torch.float64).log().permute(0, 3, 1, 2).float()
    return logits, torch.tensor(TARGET)


def hand_terms(normalise_per_batch=False, present_classes_only=False):
    """The mean class-normalised log-likelihood and the fluid Dice of PROBS, TARGET, in plain Python.

    The flags compute the wrong readings of the original that the tests make sure the loss is not.
    """
    pixels = [(b, y, x) for b in range(2) for y in range(2) for x in range(3)]
    log_likelihoods = []
    for b in range(2):
        for c in range(4):
            own = [(bb, y, x) for bb, y, x in pixels if TARGET[bb][y][x] == c and (normalise_per_batch or bb == b)]
            if normalise_per_batch and b == 1:
                continue
            if present_classes_only and not own:
                continue
            log_likelihoods.append(sum(math.log(PROBS[bb][y][x][c]) for bb, y, x in own) / (len(own) + EPS))
    mean_ll = sum(log_likelihoods) / len(log_likelihoods)
    fluid_prob = [1 - PROBS[b][y][x][0] for b, y, x in pixels]
    fluid_ref = [float(TARGET[b][y][x] != 0) for b, y, x in pixels]
    dice = 2 * sum(p * g for p, g in zip(fluid_prob, fluid_ref)) / (sum(fluid_prob) + sum(fluid_ref) + EPS)
    return mean_ll, dice


def test_hand_computed_value():
    # Image 0: LL0 = (ln .7 + ln .4 + ln .6) / 3, LL1 = (ln .5 + ln .6) / 2, LL2 = ln .5, LL3 = 0 (absent).
    # Image 1: LL0 = (ln .9 + ln .5 + ln .25 + ln .8) / 4, LL1 = LL2 = 0 (absent), LL3 = (ln .5 + ln .2) / 2.
    ll = [(math.log(0.7) + math.log(0.4) + math.log(0.6)) / 3, (math.log(0.5) + math.log(0.6)) / 2, math.log(0.5), 0.0,
          (math.log(0.9) + math.log(0.5) + math.log(0.25) + math.log(0.8)) / 4, 0.0, 0.0,
          (math.log(0.5) + math.log(0.2)) / 2]
    mean_ll = sum(ll) / 8  # absent classes count in the mean over 4 classes
    # Fluid pf = 1 - p0 on the 12 pixels; fluid reference gf on pixels 2, 4, 5 (image 0) and 10, 11 (image 1).
    # sum(pf gf) = .8 + .7 + .9 + .7 + .4 = 3.5; sum(pf) = (.3 + .6 + .8 + .4 + .7 + .9) + (.1 + .5 + .75 + .2 + .7
    # + .4) = 3.7 + 2.65 = 6.35; sum(gf) = 5.
    dice = 2 * 3.5 / (6.35 + 5 + EPS)
    expected = -0.5 * mean_ll + 0.5 * (1 - dice)
    assert (mean_ll, dice) == pytest.approx(hand_terms(), rel=1e-6)

    assert KERAS_EPSILON == EPS
    value = rmit_loss(*hand_case())
    assert value.dtype == torch.float32 and value.ndim == 0
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # The form -0.5 * (mean LL + Dice) is the same loss less the constant 0.5.
    assert value.item() - (-0.5 * (mean_ll + dice)) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("wrong_value", [
    -0.5 * hand_terms()[0] + 0.5 * hand_terms()[1],  # + Dice instead of + (1 - Dice)
    -0.5 * hand_terms(present_classes_only=True)[0] + 0.5 * (1 - hand_terms()[1]),  # absent classes left out
    -0.5 * hand_terms(normalise_per_batch=True)[0] + 0.5 * (1 - hand_terms()[1]),  # counts over the batch
    -0.5 * hand_terms()[0],  # no Dice term
])
def test_hand_value_is_not_a_wrong_reading(wrong_value):
    assert rmit_loss(*hand_case()).item() != pytest.approx(wrong_value, rel=1e-3)


def numpy_fluid_dice_loss(background_prob, target):
    """1 - 2 sum(pf gf) / (sum(pf) + sum(gf) + eps) over the whole batch, pf = 1 - clip(p0): the original's."""
    fluid_prob = 1.0 - np.clip(background_prob.astype(np.float64), EPS, 1 - EPS)
    fluid_ref = (target != 0).astype(np.float64)
    return 1.0 - 2.0 * (fluid_prob * fluid_ref).sum() / (fluid_prob.sum() + fluid_ref.sum() + EPS)


@pytest.mark.parametrize("fluid_fraction", [0.3, 0.02, 0.0])
def test_fluid_dice_loss_from_smp_equals_hand_formula(fluid_fraction):
    generator = torch.Generator().manual_seed(5)
    background_prob = torch.rand(3, 5, 7, generator=generator)
    target = torch.randint(1, 4, (3, 5, 7), generator=generator)
    target[torch.rand(3, 5, 7, generator=generator) >= fluid_fraction] = 0
    expected = numpy_fluid_dice_loss(background_prob.numpy(), target.numpy())
    value = fluid_dice_loss(background_prob, target).item()
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-7)
    if fluid_fraction == 0.0:
        assert value == 1.0  # no fluid: Dice 0, where smp alone would return 0
    else:
        # One Dice over the whole batch, not the mean of per-image Dice losses.
        per_image = np.mean([numpy_fluid_dice_loss(background_prob[b].numpy(), target[b].numpy()) for b in range(3)])
        assert value != pytest.approx(per_image, rel=1e-4)


def test_probabilities_are_clipped_before_log_and_dice():
    # One fluid pixel whose fluid probability is e^-40 / (1 + e^-40): clipped to eps, so the log-likelihood is
    # ln eps (not about -40) and nothing flows back through the clipped probabilities.
    logits = torch.tensor([[[[0.0]], [[-40.0]]]], requires_grad=True)
    target = torch.tensor([[[1]]])
    clipped_fluid = 1.0 - np.float32(1 - EPS)  # 1 - p0 after clipping, in float32
    dice = 2 * clipped_fluid / (clipped_fluid + 1 + EPS)
    expected = -0.5 * (math.log(EPS) / (1 + EPS) + 0.0) / 2 + 0.5 * (1 - dice)
    value = rmit_loss(logits, target)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_confident_correct_logits():
    logits = 30.0 * torch.nn.functional.one_hot(torch.tensor(TARGET), 4).permute(0, 3, 1, 2).float()
    assert rmit_loss(logits, torch.tensor(TARGET)).item() == pytest.approx(0.0, abs=1e-5)
    # Without fluid the Dice term stays 1 - 0: the best value is 0.5.
    background = torch.zeros(2, 2, 3, dtype=torch.int64)
    logits = 30.0 * torch.nn.functional.one_hot(background, 4).permute(0, 3, 1, 2).float()
    assert rmit_loss(logits, background).item() == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("target", [
    torch.tensor(TARGET).clamp(max=1),  # SRF and PED absent from every image
    torch.zeros(2, 2, 3, dtype=torch.int64),  # no fluid at all
])
def test_gradient_is_finite_when_a_class_is_absent_everywhere(target):
    logits = torch.randn(2, 4, 2, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    rmit_loss(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_bf16_logits_are_scored_in_float32():
    logits, target = hand_case()
    reference = rmit_loss(logits, target)
    low = logits.bfloat16()
    value = rmit_loss(low, target)
    assert value.dtype == torch.float32
    assert value.item() == rmit_loss(low.float(), target).item()  # only the logits' rounding differs
    assert value.item() == pytest.approx(reference.item(), rel=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rmit_loss(low, target).item() == value.item()


def test_module_wraps_the_function():
    logits, target = hand_case()
    loss = RmitLoss()
    assert loss(logits, target).item() == rmit_loss(logits, target).item()
    assert loss.name == "rmit"
    assert (0.5 * RmitLoss()).name == "0.5*rmit"


@pytest.mark.parametrize("logits, target", [
    (torch.zeros(2, 4, 2), torch.zeros(2, 2, dtype=torch.int64)),  # 3-D logits
    (torch.zeros(2, 4, 2, 3), torch.zeros(2, 3, 2, dtype=torch.int64)),  # height and width swapped
    (torch.zeros(2, 4, 2, 3), torch.zeros(1, 2, 3, dtype=torch.int64)),  # batch sizes differ
    (torch.zeros(2, 4, 2, 3), torch.zeros(2, 2, 3)),  # float target
    (torch.zeros(2, 4, 2, 3), torch.full((2, 2, 3), 4)),  # code 4 with 4 classes
    (torch.zeros(2, 1, 2, 3), torch.zeros(2, 2, 3, dtype=torch.int64)),  # one class
    (torch.zeros(2, 4, 2, 3, dtype=torch.int64), torch.zeros(2, 2, 3, dtype=torch.int64)),  # integer logits
])
def test_bad_inputs_raise_value_error(logits, target):
    with pytest.raises(ValueError):
        RmitLoss()(logits, target)
