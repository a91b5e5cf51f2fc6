"""Segmentation losses: soft Dice, class-balanced cross-entropy and their combination, chosen by ``LOSS``.

Every loss takes ``logits`` ``(N, C, H, W)`` float (raw scores, before softmax) and ``target`` ``(N, H, W)``
int64 label codes ``0..C-1`` (config: 0 background, 1 IRF, 2 SRF, 3 PED) and returns a 0-d tensor. Bad inputs
raise ValueError (:func:`utils.train.base.check_segmentation_inputs`). ``LOSS`` names one of :data:`LOSSES`:

- ``"rmit"`` (default): the authors' loss (:class:`utils.train.method_loss.RmitLoss`);
- ``"balanced_ce_dice"``: the pipeline's earlier ``CE_WEIGHT * class-balanced cross-entropy + DICE_WEIGHT * Dice``
  (:func:`balanced_ce_dice_loss`);
- ``"ce_dice"``: ``CE_WEIGHT * plain (unweighted) cross-entropy + DICE_WEIGHT * Dice``, like nnU-Net's Dice + CE
  (:func:`ce_dice_loss`). The class balancing pushes every fluid pixel's weight up by about the background/fluid
  ratio, which favours over-segmentation; this option leaves the balance to the Dice term.

Pixels whose target is ``config.IGNORE_LABEL`` (``BLANK_COLUMNS_IGNORED``) count in neither the cross-entropies nor
the Dice; the authors' loss takes no such code.

Dice wraps ``segmentation_models_pytorch.losses`` (multiclass mode, from logits): a class's soft score
is taken over the whole batch, a class absent from the batch's target contributes 0 (so false positives of an
absent class are left to the cross-entropy), and the loss is the mean over the classes (all ``C`` by default).
"""

from __future__ import annotations

from typing import Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

import config
from utils.train.base import Loss, WeightedSum
from utils.train.method_loss import RmitLoss


def class_balanced_weights(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class weights proportional to the inverse frequency of each class in ``target``, summing to 1.

    ``weight_c = (1 / count_c) / sum_k (1 / count_k)`` over the classes present; a class absent from ``target``
    gets weight 0 (it has no pixel to weigh, and 1 / 0 would be inf).

    Args:
        target: ``(N, H, W)`` int64 label codes in ``0..n_classes-1``.
        n_classes: number of classes ``C``.

    Returns:
        ``(C,)`` float32 on ``target``'s device, values in ``[0, 1]``; all zero only if ``target`` holds no code in
        ``0..n_classes-1``.
    """
    counts = torch.bincount(target.reshape(-1), minlength=n_classes)[:n_classes].float()
    inverse = torch.where(counts > 0, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))
    return inverse / inverse.sum().clamp_min(torch.finfo(inverse.dtype).tiny)


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with :func:`class_balanced_weights` computed from this batch's ``target``.

    With PyTorch's weighted mean (``sum_i w[y_i] * ce_i / sum_i w[y_i]``) and ``w_c`` proportional to
    ``1 / count_c``, this equals the mean over the classes present in the batch of each class's mean pixel
    cross-entropy: a small fluid weighs as much as the background.

    Args:
        logits: ``(N, C, H, W)`` float raw scores.
        target: ``(N, H, W)`` int64 label codes in ``0..C-1`` (or ``config.IGNORE_LABEL``: left out), not empty.

    Returns:
        0-d tensor, >= 0, differentiable with respect to ``logits`` (the weights are constants).
    """
    weight = class_balanced_weights(target, logits.shape[1]).to(logits.dtype)  # bincount: ignored codes drop out
    return F.cross_entropy(logits, target, weight=weight, ignore_index=config.IGNORE_LABEL)


class BalancedCrossEntropyLoss(Loss):
    """:func:`balanced_cross_entropy` as a :class:`~utils.train.base.Loss` named ``"balanced_ce"``."""

    name = "balanced_ce"
    ignore_label = config.IGNORE_LABEL

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return balanced_cross_entropy(logits, target)


class CrossEntropyLoss(Loss):
    """Plain cross-entropy (``F.cross_entropy``, mean over pixels, no class weights), named ``"ce"``."""

    name = "ce"
    ignore_label = config.IGNORE_LABEL

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, ignore_index=config.IGNORE_LABEL)


class DiceLoss(Loss):
    """``1 - soft Dice`` per class, averaged over classes: ``smp.losses.DiceLoss`` in multiclass mode, from logits.

    Args:
        classes: class codes that enter the mean; None (default) takes all ``C``, background included.
        smooth: added to the numerator and denominator of each soft Dice.
        eps: lower bound of each denominator.
        log_loss: ``-log(Dice)`` instead of ``1 - Dice``.

    Returns (forward):
        0-d tensor in ``[0, 1]`` (``1 - Dice``), near 0 for confident correct logits.
    """

    name = "dice"
    ignore_label = config.IGNORE_LABEL

    def __init__(self, classes: Sequence[int] | None = None, smooth: float = 0.0, eps: float = 1e-7,
                 log_loss: bool = False):
        super().__init__()
        self.smp_loss = smp.losses.DiceLoss(mode="multiclass", classes=None if classes is None else list(classes),
                                            log_loss=log_loss, from_logits=True, smooth=smooth, eps=eps,
                                            ignore_index=config.IGNORE_LABEL)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.smp_loss(logits, target)


def balanced_ce_dice_loss(ce_weight: float = 0.5, dice_weight: float = 0.5,
                          dice_classes: Sequence[int] | None = None) -> WeightedSum:
    """``LOSS = "balanced_ce_dice"``: ``ce_weight * balanced cross-entropy + dice_weight * Dice``.

    Args:
        dice_classes: the class codes the Dice term averages over; None: all, background included.

    Returns:
        a :class:`~utils.train.base.WeightedSum` named ``"0.5*balanced_ce + 0.5*dice"``.
    """
    return ce_weight * BalancedCrossEntropyLoss() + dice_weight * DiceLoss(dice_classes)


def ce_dice_loss(ce_weight: float = 0.5, dice_weight: float = 0.5,
                 dice_classes: Sequence[int] | None = None) -> WeightedSum:
    """``LOSS = "ce_dice"``: ``ce_weight * plain cross-entropy + dice_weight * Dice`` (nnU-Net's Dice + CE, scaled by
    0.5 with the default weights; nnU-Net's Dice leaves the background out: ``dice_classes`` = the fluid codes).

    Args:
        dice_classes: the class codes the Dice term averages over; None: all, background included.

    Returns:
        a :class:`~utils.train.base.WeightedSum` named ``"<ce_weight>*ce + <dice_weight>*dice"``.
    """
    return ce_weight * CrossEntropyLoss() + dice_weight * DiceLoss(dice_classes)


# LOSS -> the loss, given the weights of its cross-entropy and Dice terms (CE_WEIGHT, DICE_WEIGHT) and the classes
# its Dice averages over (DICE_BACKGROUND); the authors' loss has its own; the names are utils/configuration.py's
# CHOICES["LOSS"], checked there
LOSSES = {
    "rmit": lambda ce_weight, dice_weight, dice_classes: RmitLoss(),
    "balanced_ce_dice": balanced_ce_dice_loss,
    "ce_dice": ce_dice_loss,
}


def make_loss(cfg) -> Loss:
    """The training loss the config names in ``LOSS`` (:data:`LOSSES`), its Dice over the fluid codes only where
    ``DICE_BACKGROUND`` is False."""
    dice_classes = None if cfg.DICE_BACKGROUND else sorted(cfg.FLUIDS.values())
    return LOSSES[cfg.LOSS](cfg.CE_WEIGHT, cfg.DICE_WEIGHT, dice_classes)
