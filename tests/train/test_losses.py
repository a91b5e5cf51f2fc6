"""Hand-computed tables for utils/train/losses.py and the loss base in utils/train/base.py."""

import math

import pytest
import torch

import config
from utils.configuration import load_config
from utils.train import losses
from utils.train.losses import LossSettings
from utils.train.base import Loss, WeightedSum, check_segmentation_inputs

# One row of 4 pixels: three background, one IRF; SRF and PED absent.
TARGET = torch.tensor([[[0, 0, 0, 1]]])


def one_hot_logits(labels, n_classes=config.N_CLASSES, margin=20.0):
    """(N, C, H, W) float scores, ``margin`` on the true class and 0 elsewhere."""
    return margin * torch.nn.functional.one_hot(labels, n_classes).permute(0, 3, 1, 2).float()


def random_batch(seed=0, shape=(2, config.N_CLASSES, 8, 6)):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator, requires_grad=True)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=generator)
    return logits, target


def boundary_ce(ignore_label=None):
    """The cross-entropy with ReLayNet's outline weighting (CE_BOUNDARY_WEIGHT)."""
    return losses.CrossEntropyLoss(ignore_label, boundary_weight=10.0)


ALL_LOSSES = [losses.DiceLoss, losses.BalancedCrossEntropyLoss, losses.balanced_ce_dice_loss,
              losses.CrossEntropyLoss, losses.ce_dice_loss, losses.LovaszSoftmaxLoss, losses.ce_lovasz_loss,
              boundary_ce]
IGNORING_LOSSES = ALL_LOSSES  # every loss here takes an ignored code (the authors' loss, which does not, is apart)


def test_class_balanced_weights_inverse_frequency_and_absent_classes():
    # Counts (3, 1, 0, 0): 1/count -> (1/3, 1, 0, 0), normalised by 4/3.
    weights = losses.class_balanced_weights(TARGET, config.N_CLASSES)
    assert weights.tolist() == pytest.approx([0.25, 0.75, 0.0, 0.0])
    assert losses.class_balanced_weights(torch.zeros(1, 2, 2, dtype=torch.int64), 4).tolist() == [1.0, 0, 0, 0]


def test_balanced_cross_entropy_hand_value():
    # Background pixels score (0, 0): CE ln 2. The IRF pixel scores (0, ln 3): p = 3/4, CE ln(4/3).
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 1, 0, 3] = math.log(3.0)
    expected = (math.log(2.0) + math.log(4 / 3)) / 2  # the mean of the two class means
    unweighted = (3 * math.log(2.0) + math.log(4 / 3)) / 4
    value = losses.BalancedCrossEntropyLoss()(logits, TARGET).item()
    assert value == pytest.approx(expected)
    assert value != pytest.approx(unweighted)


@pytest.mark.parametrize("loss, expected", [
    # Zero logits over 4 classes: p = 1/4 on each of the 4 pixels. Absent SRF and PED contribute 0 to the mean.
    # Dice: background 2*0.75/(1+3) = 0.375, IRF 2*0.25/(1+1) = 0.25 -> (0.625 + 0.75 + 0 + 0) / 4.
    (losses.DiceLoss(), (0.625 + 0.75) / 4),
    (losses.DiceLoss(classes=[1, 2, 3]), 0.75 / 3),
    # Every class at p = 1/4: each class mean CE is ln 4.
    (losses.BalancedCrossEntropyLoss(), math.log(4.0)),
    # Lovasz-softmax, classes present only. Background: errors |1 - p| = 3/4 on its three pixels, 1/4 on the IRF one;
    # ranked, the Jaccard loss steps 1/3, 2/3, 1, 1, so its increments (1/3, 1/3, 1/3, 0) weigh the errors: 3/4.
    # IRF: the error 3/4 of its one pixel ranks first, and one missed pixel of one already loses the whole Jaccard:
    # increments (1, 0, 0, 0), 3/4. The mean: 3/4.
    (losses.LovaszSoftmaxLoss(), 0.75),
])
def test_loss_hand_values_on_uniform_scores(loss, expected):
    assert loss(torch.zeros(1, config.N_CLASSES, 1, 4), TARGET).item() == pytest.approx(expected)


@pytest.mark.parametrize("make", [losses.DiceLoss, losses.BalancedCrossEntropyLoss, losses.LovaszSoftmaxLoss])
def test_perfect_logits_give_near_zero_loss(make):
    target = torch.tensor([[[0, 1, 2], [3, 3, 0]], [[2, 2, 1], [0, 0, 0]]])
    assert make()(one_hot_logits(target), target).item() == pytest.approx(0.0, abs=1e-6)


def test_combination_equals_half_ce_plus_half_dice():
    logits, target = random_batch()
    combined = losses.balanced_ce_dice_loss()
    ce = losses.BalancedCrossEntropyLoss()(logits, target)
    dice = losses.DiceLoss()(logits, target)
    assert combined(logits, target).item() == pytest.approx(0.5 * ce.item() + 0.5 * dice.item())
    assert combined.name == "0.5*balanced_ce + 0.5*dice"
    made = losses.make_loss(LossSettings(loss="balanced_ce_dice", ce_weight=0.25, dice_weight=0.75,
                                         dice_background=True))
    assert made.name == "0.25*balanced_ce + 0.75*dice"


def test_ce_dice_is_plain_cross_entropy_plus_dice():
    # Targets (0, 0, 0, 1) with logits (2, 0, 0, 0) on every pixel: plain CE is the pixel mean of
    # -log softmax, which differs from the balanced mean over classes.
    logits = torch.zeros(1, 4, 1, 4)
    logits[:, 0] = 2.0
    target = torch.tensor([[[0, 0, 0, 1]]])
    log_p = torch.log_softmax(logits[0, :, 0, 0], dim=0)
    plain = -(3 * log_p[0] + log_p[1]) / 4
    balanced = -(log_p[0] + log_p[1]) / 2
    assert losses.CrossEntropyLoss()(logits, target).item() == pytest.approx(plain.item())
    assert losses.BalancedCrossEntropyLoss()(logits, target).item() == pytest.approx(balanced.item())
    made = losses.make_loss(LossSettings(loss="ce_dice", ce_weight=0.5, dice_weight=0.5, dice_background=True))
    dice = losses.DiceLoss()(logits, target)
    assert made.name == "0.5*ce + 0.5*dice"
    assert made(logits, target).item() == pytest.approx(0.5 * plain.item() + 0.5 * dice.item())


def test_ce_lovasz_is_plain_cross_entropy_plus_lovasz():
    logits, target = random_batch(seed=5)
    made = losses.make_loss(LossSettings(loss="ce_lovasz", ce_weight=0.25, lovasz_weight=0.75))
    assert made.name == "0.25*ce + 0.75*lovasz"
    expected = 0.25 * losses.CrossEntropyLoss()(logits, target) + 0.75 * losses.LovaszSoftmaxLoss()(logits, target)
    assert made(logits, target).item() == pytest.approx(expected.item())
    # the Lovasz term ranks a worse pixel above a better one: moving one wrong pixel further from its class raises it
    worse = logits.detach().clone()
    wrong = (worse.argmax(1) != target).nonzero()[0]
    worse[wrong[0], target[tuple(wrong)], wrong[1], wrong[2]] -= 5.0
    assert losses.LovaszSoftmaxLoss()(worse, target) > losses.LovaszSoftmaxLoss()(logits, target)


def test_lovasz_is_taken_over_the_whole_batch_not_per_image():
    """The metric pools B-scans, and so does the Lovasz term: smp's per_image=False, not the mean of each image's."""
    import segmentation_models_pytorch as smp
    logits, target = random_batch(seed=6, shape=(3, config.N_CLASSES, 6, 5))
    target[0] = 0  # images with different classes present
    ours = losses.LovaszSoftmaxLoss()(logits, target).item()
    assert ours == pytest.approx(smp.losses.LovaszLoss("multiclass", per_image=False)(logits, target).item())
    assert ours != pytest.approx(smp.losses.LovaszLoss("multiclass", per_image=True)(logits, target).item())


@pytest.mark.parametrize("make", IGNORING_LOSSES)
def test_a_batch_with_every_pixel_ignored_gives_a_zero_loss(make):
    """A patch wholly in blank columns (BLANK_COLUMNS_IGNORED): nothing to learn, not a NaN that ends training."""
    logits, target = random_batch(seed=7)
    value = make(ignore_label=config.IGNORE_LABEL)(logits, torch.full_like(target, config.IGNORE_LABEL))
    assert value.shape == () and value.item() == 0.0
    value.backward()
    assert (logits.grad == 0).all()


def test_dice_without_background_averages_the_fluids_present():
    # Logits that give every pixel probabilities (1/2, 1/6, 1/6, 1/6) and targets (0, 0, 0, 1): the soft Dice of class 1
    # is 2 * (1/6) / (4/6 + 1) = 1/5; classes 2 and 3 are absent from the target and count a loss of 0 in the mean
    # (smp's rule), and the background's Dice (2 * 3/2 / (2 + 3) = 3/5) enters only with DICE_BACKGROUND.
    logits = torch.zeros(1, 4, 1, 4)
    logits[:, 0] = math.log(3.0)
    target = torch.tensor([[[0, 0, 0, 1]]])
    fluid_only = losses.make_loss(LossSettings(loss="ce_dice", ce_weight=0.0, dice_weight=1.0,
                                               dice_background=False))
    every_class = losses.make_loss(LossSettings(loss="ce_dice", ce_weight=0.0, dice_weight=1.0,
                                                dice_background=True))
    assert fluid_only(logits, target).item() == pytest.approx((1 - 1 / 5) / 3, abs=1e-5)
    assert every_class(logits, target).item() == pytest.approx((1 - 3 / 5 + 1 - 1 / 5) / 4, abs=1e-5)


def test_loss_arithmetic_names_and_flattening():
    dice, ce = losses.DiceLoss(), losses.BalancedCrossEntropyLoss()
    assert (dice + ce).name == "dice + balanced_ce"
    nested = 2 * (0.25 * dice + ce)
    assert isinstance(nested, WeightedSum)
    assert nested.weights == [0.5, 2.0]
    assert nested.name == "0.5*dice + 2*balanced_ce"
    logits, target = random_batch(seed=1)
    expected = 0.5 * dice(logits, target) + 2 * ce(logits, target)
    assert nested(logits, target).item() == pytest.approx(expected.item())
    with pytest.raises(TypeError):
        dice * "0.5"


@pytest.mark.parametrize("make", ALL_LOSSES)
def test_gradients_flow(make):
    logits, target = random_batch(seed=2)
    make()(logits, target).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("make", ALL_LOSSES)
@pytest.mark.parametrize("fill", [0, 1])  # only background (every fluid absent), or no background at all
def test_no_nan_when_classes_are_absent(make, fill):
    logits, _ = random_batch(seed=3)
    target = torch.full((2, 8, 6), fill)
    value = make()(logits, target)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("logits, target, message", [
    (torch.zeros(4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), r"expected shape \(N, C, H, W\), got \(4, 2, 2\)"),
    (torch.zeros(1, 4, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2, dtype=torch.int64),
     r"float tensor .*got dtype torch.int64"),
    (torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), r"C >= 2"),
    (torch.zeros(1, 4, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int64), r"expected shape \(N, H, W\) = \(1, 2, 2\)"),
    (torch.zeros(2, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), r"got \(1, 2, 2\)"),
    (torch.zeros(1, 4, 2, 3), torch.zeros(1, 3, 2, dtype=torch.int64), r"got \(1, 3, 2\)"),
    (torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2), r"target: expected dtype torch.int64 .* \.long\(\)"),
    (torch.zeros(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.uint8), r"got torch.uint8"),
    (torch.zeros(1, 4, 2, 2), torch.full((1, 2, 2), 4), r"codes 0\.\.3, got values from 4 to 4"),
    (torch.zeros(0, 4, 2, 2), torch.zeros(0, 2, 2, dtype=torch.int64), r"at least one pixel"),
    (torch.zeros(1, 4, 2, 2).numpy(), torch.zeros(1, 2, 2, dtype=torch.int64), r"got ndarray"),
])
@pytest.mark.parametrize("make", ALL_LOSSES)
def test_bad_inputs_raise_value_error(make, logits, target, message):
    with pytest.raises(ValueError, match=message):
        make()(logits, target)


def test_check_segmentation_inputs_n_classes():
    with pytest.raises(ValueError, match=r"C = 4 class channels"):
        check_segmentation_inputs(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), n_classes=4)


def test_base_loss_needs_compute():
    with pytest.raises(NotImplementedError):
        Loss()(torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.int64))


@pytest.mark.parametrize("ignore_label", [config.IGNORE_LABEL, 7])
@pytest.mark.parametrize("make", IGNORING_LOSSES)
def test_ignored_pixels_count_nowhere(make, ignore_label):
    """With pixels of the code a loss is given, the loss equals the loss of the other pixels alone, whatever the
    scores there."""
    logits, target = random_batch(seed=3, shape=(2, config.N_CLASSES, 4, 6))
    ignored = target.clone()
    ignored[:, :, :2] = ignore_label  # the first two columns of every image
    loss = make(ignore_label=ignore_label)
    assert loss.ignore_label == ignore_label
    kept = loss(logits[..., 2:], target[..., 2:])
    assert loss(logits, ignored).item() == pytest.approx(kept.item(), rel=1e-5)
    changed = logits.detach().clone()
    changed[..., :2] = 50.0 * torch.randn_like(changed[..., :2])
    assert loss(changed, ignored).item() == pytest.approx(kept.item(), rel=1e-5)


def test_a_loss_given_no_ignored_code_refuses_the_config_default():
    logits, target = random_batch()
    target[0, 0, 0] = config.IGNORE_LABEL
    with pytest.raises(ValueError, match="expected label codes 0..3"):
        losses.ce_dice_loss()(logits, target)


def test_ignore_label_and_background_given_through_the_config_reach_the_losses():
    """``--set IGNORE_LABEL=...`` and label codes other than config.py's reach the loss train.py builds
    (LossSettings.from_config of the effective config), not config.py's values."""
    cfg = load_config(["LOSS=ce_dice", "IGNORE_LABEL=200"])
    loss = losses.make_loss(LossSettings.from_config(cfg))
    assert loss.ignore_label == 200 != config.IGNORE_LABEL
    logits, target = random_batch(seed=4)
    ignored = target.clone()
    ignored[..., :2] = 200
    assert loss(logits, ignored).item() == pytest.approx(loss(logits[..., 2:], target[..., 2:]).item(), rel=1e-5)
    with pytest.raises(ValueError, match="expected label codes 0..3"):
        loss(logits, torch.full_like(target, config.IGNORE_LABEL))

    # the authors' loss on background code 3 (and PED 0) is its loss on code 0 with the classes swapped
    swapped = load_config(["BACKGROUND=3", "PED=0", "FLUIDS={'IRF': 1, 'SRF': 2, 'PED': 0}"])
    rmit = losses.make_loss(LossSettings.from_config(swapped))
    assert rmit.background == 3
    order = [3, 1, 2, 0]
    expected = losses.make_loss(LossSettings())(logits, target).item()
    assert rmit(logits[:, order], torch.tensor(order)[target]).item() == pytest.approx(expected, rel=1e-6)
    assert losses.RmitLoss()(logits[:, order], torch.tensor(order)[target]).item() != pytest.approx(expected)


def test_a_loss_entry_says_whether_its_loss_leaves_the_ignored_code_out():
    for name, entry in losses.LOSSES.items():
        loss = entry.build(LossSettings(loss=name, ignore_label=200))
        assert loss.ignore_label == (200 if entry.ignores_label else None), name


def test_the_authors_loss_takes_no_ignored_code():
    logits, target = random_batch()
    target[0, 0, 0] = config.IGNORE_LABEL
    with pytest.raises(ValueError, match="expected label codes 0..3"):
        losses.RmitLoss()(logits, target)


def test_boundary_band_marks_both_sides_of_each_outline_and_no_edge():
    target = torch.zeros(1, 7, 9, dtype=torch.int64)
    target[0, 2:5, 3:6] = 2  # a 3 x 3 pocket
    band = losses.boundary_band(target, radius_px=1)
    expected = torch.zeros(7, 9, dtype=torch.bool)
    expected[1:6, 2:7] = True  # the pocket's ring and the background ring around it
    expected[3, 4] = False  # the pocket's centre sees no other code
    assert torch.equal(band[0], expected)
    assert losses.boundary_band(target, radius_px=2)[0].sum() > band[0].sum()
    ignored = target.clone()
    ignored[0, :, :2] = config.IGNORE_LABEL  # an ignored strip is no outline, nor is the image's edge
    assert torch.equal(losses.boundary_band(ignored, 1, config.IGNORE_LABEL), band)
    assert not losses.boundary_band(torch.full_like(target, 1), 1).any()


def test_boundary_weighted_cross_entropy_is_relaynets_weighted_mean():
    logits, target = random_batch(seed=8)
    weight = 1.0 + 10.0 * losses.boundary_band(target, 1).float()
    per_pixel = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    expected = (weight * per_pixel).sum() / weight.sum()
    made = losses.make_loss(LossSettings(loss="ce_dice", ce_boundary_weight=10.0))
    assert made.name == "0.5*boundary_ce + 0.5*dice"
    assert boundary_ce()(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    dice = losses.DiceLoss()(logits, target)
    assert made(logits, target).item() == pytest.approx(0.5 * expected.item() + 0.5 * dice.item(), rel=1e-6)
    unweighted = losses.CrossEntropyLoss(boundary_weight=0.0)
    assert unweighted.name == "ce" and unweighted(logits, target).item() == pytest.approx(per_pixel.mean().item())
    lovasz = losses.make_loss(LossSettings(loss="ce_lovasz", ce_boundary_weight=10.0, ce_boundary_radius_px=2))
    assert lovasz.name == "0.5*boundary_ce + 0.5*lovasz"


def test_boundary_weighting_needs_a_plain_cross_entropy():
    from utils.configuration import BOUNDARY_WEIGHTED_LOSSES, ConfigError
    for name, entry in losses.LOSSES.items():  # configuration.py's list is the losses that read the weight
        built = entry.build(LossSettings(loss=name, ce_boundary_weight=10.0))
        assert ("boundary_ce" in built.name) == (name in BOUNDARY_WEIGHTED_LOSSES), name
    with pytest.raises(ConfigError, match="CE_BOUNDARY_WEIGHT=10.0: expected 0 with LOSS='rmit'"):
        load_config(["CE_BOUNDARY_WEIGHT=10.0"])
    assert load_config(["LOSS=ce_dice", "CE_BOUNDARY_WEIGHT=10.0"]).CE_BOUNDARY_WEIGHT == 10.0
