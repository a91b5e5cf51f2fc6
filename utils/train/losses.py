"""Segmentation losses: soft Dice, class-balanced cross-entropy and their combination, chosen by ``LOSS``.

Every loss takes ``logits`` ``(N, C, H, W)`` float (raw scores, before softmax) and ``target`` ``(N, H, W)``
int64 label codes ``0..C-1`` (config: 0 background, 1 IRF, 2 SRF, 3 PED) and returns a 0-d tensor. Bad inputs
raise ValueError (:func:`utils.train.base.check_segmentation_inputs`). ``LOSS`` names one of :data:`LOSSES`:

- ``"rmit"`` (default): the authors' loss (:class:`utils.train.method_loss.RmitLoss`);
- ``"balanced_ce_dice"``: ``CE_WEIGHT * class-balanced cross-entropy + DICE_WEIGHT * Dice``
  (:func:`balanced_ce_dice_loss`);
- ``"ce_dice"``: ``CE_WEIGHT * plain (unweighted) cross-entropy + DICE_WEIGHT * Dice``, like nnU-Net's Dice + CE
  (:func:`ce_dice_loss`). The class balancing pushes every fluid pixel's weight up by about the background/fluid
  ratio, which favours over-segmentation; this option leaves the balance to the Dice term;
- ``"ce_lovasz"``: ``CE_WEIGHT * plain cross-entropy + LOVASZ_WEIGHT * Lovasz-softmax`` (:func:`ce_lovasz_loss`), the
  Lovasz extension of the Jaccard index (Berman et al., CVPR 2018) in place of the soft Dice: its gradient goes to
  the pixels ranked worst, where the region's outline is decided.

With ``CE_BOUNDARY_WEIGHT`` > 0 the plain cross-entropy of the last two weighs the pixels near an outline more
(ReLayNet's weighting, :class:`CrossEntropyLoss`).

Pixels whose target is the ``ignore_label`` a loss is given (``IGNORE_LABEL``, for ``BLANK_COLUMNS_IGNORED``) count in
none of the cross-entropies, the Dice and the Lovasz term; the authors' loss takes no such code. :func:`make_loss`
builds the loss of ``LOSS`` from :class:`LossSettings`, the config's values (``--set`` included), once per run.

Dice wraps ``segmentation_models_pytorch.losses`` (multiclass mode, from logits): a class's soft score
is taken over the whole batch, a class absent from the batch's target contributes 0 (so false positives of an
absent class are left to the cross-entropy), and the loss is the mean over the classes (all ``C`` by default).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, NamedTuple, Sequence

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

import config
from utils.train.base import Loss, WeightedSum
from utils.stage_settings import settings_from_config
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


def _ignore_index(ignore_label: int | None) -> int:
    """``F.cross_entropy``'s ``ignore_index`` for ``ignore_label``: its default -100 (no target holds it) for None."""
    return -100 if ignore_label is None else ignore_label


def balanced_cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_label: int | None = None
                           ) -> torch.Tensor:
    """Cross-entropy with :func:`class_balanced_weights` computed from this batch's ``target``.

    With PyTorch's weighted mean (``sum_i w[y_i] * ce_i / sum_i w[y_i]``) and ``w_c`` proportional to
    ``1 / count_c``, this equals the mean over the classes present in the batch of each class's mean pixel
    cross-entropy: a small fluid weighs as much as the background.

    Args:
        logits: ``(N, C, H, W)`` float raw scores.
        target: ``(N, H, W)`` int64 label codes in ``0..C-1`` (or ``ignore_label``: left out), not empty.
        ignore_label: the code of pixels that count nowhere (``IGNORE_LABEL``), or None.

    Returns:
        0-d tensor, >= 0, differentiable with respect to ``logits`` (the weights are constants).
    """
    weight = class_balanced_weights(target, logits.shape[1]).to(logits.dtype)  # bincount: ignored codes drop out
    return F.cross_entropy(logits, target, weight=weight, ignore_index=_ignore_index(ignore_label))


class BalancedCrossEntropyLoss(Loss):
    """:func:`balanced_cross_entropy` as a :class:`~utils.train.base.Loss` named ``"balanced_ce"``.

    Args:
        ignore_label: the target code of pixels that count nowhere (``IGNORE_LABEL``), or None (every code counts).
    """

    name = "balanced_ce"

    def __init__(self, ignore_label: int | None = None):
        super().__init__()
        self.ignore_label = ignore_label

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return balanced_cross_entropy(logits, target, self.ignore_label)


def boundary_band(target: torch.Tensor, radius_px: int, ignore_label: int | None = None) -> torch.Tensor:
    """The pixels within ``radius_px`` of a change of label: those whose ``(2 radius_px + 1)`` square neighbourhood
    holds another code (both sides of every outline, so the band is ``2 radius_px`` wide). Ignored pixels and the
    outside of the image hold no code, so the edge of an ignored region or of the image is no outline.

    Args:
        target: ``(N, H, W)`` int64 label codes (or ``ignore_label``).
        radius_px: >= 1.

    Returns:
        ``(N, H, W)`` bool on ``target``'s device.
    """
    codes = target[:, None].float()
    ignored = torch.zeros_like(codes, dtype=torch.bool) if ignore_label is None else codes == ignore_label
    size = 2 * int(radius_px) + 1
    # max_pool2d pads with -inf: the outside never raises the highest code, nor (negated) lowers the lowest
    highest = F.max_pool2d(codes.masked_fill(ignored, -torch.inf), size, stride=1, padding=radius_px)
    lowest = -F.max_pool2d((-codes).masked_fill(ignored, -torch.inf), size, stride=1, padding=radius_px)
    return ((highest != lowest) & torch.isfinite(highest) & torch.isfinite(lowest))[:, 0]


class CrossEntropyLoss(Loss):
    """Plain cross-entropy (``F.cross_entropy``, mean over pixels, no class weights), named ``"ce"``; with
    ``boundary_weight`` > 0, ReLayNet's boundary weighting (Roy et al., Biomed. Opt. Express 2017): the pixels of
    :func:`boundary_band` weigh ``1 + boundary_weight``, the others 1 (a weighted mean), named ``"boundary_ce"``.

    Args:
        ignore_label: the target code of pixels that count nowhere (``IGNORE_LABEL``), or None (every code counts).
        boundary_weight: the extra weight of outline pixels (``CE_BOUNDARY_WEIGHT``), >= 0; 0: plain.
        boundary_radius_px: the band's half-width (``CE_BOUNDARY_RADIUS_PX``), >= 1.
    """

    name = "ce"

    def __init__(self, ignore_label: int | None = None, boundary_weight: float = 0.0, boundary_radius_px: int = 1):
        super().__init__()
        self.ignore_label = ignore_label
        self.boundary_weight = float(boundary_weight)
        self.boundary_radius_px = int(boundary_radius_px)
        if self.boundary_weight:
            self.name = "boundary_ce"

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ignore_index = _ignore_index(self.ignore_label)
        if not self.boundary_weight:
            return F.cross_entropy(logits, target, ignore_index=ignore_index)
        per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")  # 0 where ignored
        band = boundary_band(target, self.boundary_radius_px, self.ignore_label)
        weight = (1.0 + self.boundary_weight * band.to(per_pixel.dtype)) * (target != ignore_index)
        return (per_pixel * weight).sum() / weight.sum()


class LovaszSoftmaxLoss(Loss):
    """``smp.losses.LovaszLoss`` in multiclass mode, from logits: the Lovasz-softmax surrogate of ``1 - Jaccard`` per
    class, over the whole batch (not per image: the metric pools B-scans too), averaged over the classes present in
    the target.

    Args:
        ignore_label: the target code of pixels that count nowhere (``IGNORE_LABEL``), or None (every code counts).

    Returns (forward):
        0-d tensor in ``[0, 1]``: 0 for confident correct logits, ``1 - p`` on average for a uniform ``p`` per class.
    """

    name = "lovasz"

    def __init__(self, ignore_label: int | None = None):
        super().__init__()
        self.ignore_label = ignore_label
        # multiclass mode takes the softmax of the logits itself (smp's from_logits changes nothing there)
        self.smp_loss = smp.losses.LovaszLoss(mode="multiclass", per_image=False, ignore_index=ignore_label)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.smp_loss(logits, target)


class DiceLoss(Loss):
    """``1 - soft Dice`` per class, averaged over classes: ``smp.losses.DiceLoss`` in multiclass mode, from logits.

    Args:
        classes: class codes that enter the mean; None (default) takes all ``C``, background included.
        smooth: added to the numerator and denominator of each soft Dice.
        eps: lower bound of each denominator.
        log_loss: ``-log(Dice)`` instead of ``1 - Dice``.
        ignore_label: the target code of pixels that count nowhere (``IGNORE_LABEL``), or None (every code counts).

    Returns (forward):
        0-d tensor: ``1 - Dice`` in ``[0, 1]``, or ``-log(Dice)`` in ``[0, inf)`` with ``log_loss``; near 0 for
        confident correct logits.
    """

    name = "dice"

    def __init__(self, classes: Sequence[int] | None = None, smooth: float = 0.0, eps: float = 1e-7,
                 log_loss: bool = False, ignore_label: int | None = None):
        super().__init__()
        self.ignore_label = ignore_label
        self.smp_loss = smp.losses.DiceLoss(mode="multiclass", classes=None if classes is None else list(classes),
                                            log_loss=log_loss, from_logits=True, smooth=smooth, eps=eps,
                                            ignore_index=ignore_label)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.smp_loss(logits, target)


def balanced_ce_dice_loss(ce_weight: float = 0.5, dice_weight: float = 0.5,
                          dice_classes: Sequence[int] | None = None, ignore_label: int | None = None) -> WeightedSum:
    """``LOSS = "balanced_ce_dice"``: ``ce_weight * balanced cross-entropy + dice_weight * Dice``.

    Args:
        dice_classes: the class codes the Dice term averages over; None: all, background included.
        ignore_label: the target code of pixels that count nowhere in either term (``IGNORE_LABEL``), or None.

    Returns:
        a :class:`~utils.train.base.WeightedSum` named ``"0.5*balanced_ce + 0.5*dice"``.
    """
    return (ce_weight * BalancedCrossEntropyLoss(ignore_label)
            + dice_weight * DiceLoss(dice_classes, ignore_label=ignore_label))


def ce_dice_loss(ce_weight: float = 0.5, dice_weight: float = 0.5,
                 dice_classes: Sequence[int] | None = None, ignore_label: int | None = None,
                 boundary_weight: float = 0.0, boundary_radius_px: int = 1) -> WeightedSum:
    """``LOSS = "ce_dice"``: ``ce_weight * plain cross-entropy + dice_weight * Dice`` (nnU-Net's Dice + CE, scaled by
    0.5 with the default weights; nnU-Net's Dice leaves the background out: ``dice_classes`` = the fluid codes).

    Args:
        dice_classes: the class codes the Dice term averages over; None: all, background included.
        ignore_label: the target code of pixels that count nowhere in either term (``IGNORE_LABEL``), or None.
        boundary_weight, boundary_radius_px: the cross-entropy's outline weighting (:class:`CrossEntropyLoss`).

    Returns:
        a :class:`~utils.train.base.WeightedSum` named ``"<ce_weight>*ce + <dice_weight>*dice"`` (``boundary_ce``
        with the weighting).
    """
    return (ce_weight * CrossEntropyLoss(ignore_label, boundary_weight, boundary_radius_px)
            + dice_weight * DiceLoss(dice_classes, ignore_label=ignore_label))


def ce_lovasz_loss(ce_weight: float = 0.5, lovasz_weight: float = 0.5, ignore_label: int | None = None,
                   boundary_weight: float = 0.0, boundary_radius_px: int = 1) -> WeightedSum:
    """``LOSS = "ce_lovasz"``: ``ce_weight * plain cross-entropy + lovasz_weight * Lovasz-softmax``.

    Args:
        ignore_label: the target code of pixels that count nowhere in either term (``IGNORE_LABEL``), or None.
        boundary_weight, boundary_radius_px: the cross-entropy's outline weighting (:class:`CrossEntropyLoss`).

    Returns:
        a :class:`~utils.train.base.WeightedSum` named ``"<ce_weight>*ce + <lovasz_weight>*lovasz"`` (``boundary_ce``
        with the weighting).
    """
    return (ce_weight * CrossEntropyLoss(ignore_label, boundary_weight, boundary_radius_px)
            + lovasz_weight * LovaszSoftmaxLoss(ignore_label))


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """What the losses read of the config, built once per run (:meth:`from_config`). Each field is the config.py
    setting of the same name in upper case (see config.py for its meaning); the defaults are config.py's, so a test
    names only what it changes."""

    loss: str = config.LOSS
    ce_weight: float = config.CE_WEIGHT
    dice_weight: float = config.DICE_WEIGHT
    lovasz_weight: float = config.LOVASZ_WEIGHT
    ce_boundary_weight: float = config.CE_BOUNDARY_WEIGHT
    ce_boundary_radius_px: int = config.CE_BOUNDARY_RADIUS_PX
    dice_background: bool = config.DICE_BACKGROUND
    background: int = config.BACKGROUND
    fluids: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(config.FLUIDS))
    ignore_label: int = config.IGNORE_LABEL

    @classmethod
    def from_config(cls, cfg) -> LossSettings:
        """The loss settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg)

    @property
    def dice_classes(self) -> list[int] | None:
        """The classes the Dice terms average over: all (None) with ``DICE_BACKGROUND``, else the fluid codes."""
        return None if self.dice_background else sorted(self.fluids.values())


class LossEntry(NamedTuple):
    """How a ``LOSS`` is made and what training asks of it, so that train.py asks the loss instead of its name.

    Fields:
        build: the loss of the settings.
        ignores_label: whether it leaves ``IGNORE_LABEL`` pixels out (its ``ignore_label``): ``BLANK_COLUMNS_IGNORED``
            needs a loss that does.
    """

    build: Callable[[LossSettings], Loss]
    ignores_label: bool


# LOSS -> the loss, from the weights of its terms (CE_WEIGHT, DICE_WEIGHT, LOVASZ_WEIGHT), the classes its
# Dice averages over (DICE_BACKGROUND) and the code it leaves out (IGNORE_LABEL); the authors' loss has its own terms,
# no ignored code, and takes the background's code. The names are utils/configuration.py's CHOICES["LOSS"], checked
# there
LOSSES = {
    "rmit": LossEntry(lambda settings: RmitLoss(background=settings.background), ignores_label=False),
    "balanced_ce_dice": LossEntry(lambda settings: balanced_ce_dice_loss(
        settings.ce_weight, settings.dice_weight, settings.dice_classes, settings.ignore_label), ignores_label=True),
    "ce_dice": LossEntry(lambda settings: ce_dice_loss(
        settings.ce_weight, settings.dice_weight, settings.dice_classes, settings.ignore_label,
        settings.ce_boundary_weight, settings.ce_boundary_radius_px), ignores_label=True),
    "ce_lovasz": LossEntry(lambda settings: ce_lovasz_loss(
        settings.ce_weight, settings.lovasz_weight, settings.ignore_label, settings.ce_boundary_weight,
        settings.ce_boundary_radius_px), ignores_label=True),
}


def make_loss(settings: LossSettings) -> Loss:
    """The training loss ``LOSS`` names (:data:`LOSSES`), its Dice over the fluid codes only where ``DICE_BACKGROUND``
    is False, leaving ``IGNORE_LABEL`` pixels out where it can."""
    return LOSSES[settings.loss].build(settings)
