"""The authors' own training loss: class-normalised log-likelihood plus a soft Dice of fluid against background.

Follows ``multiclass_balanced_cross_entropy_loss_unet`` in ``custom_networks.py`` of the authors' code
(github.com/RuwanT/retouch, the version with the Dice term, commit 7f7797a, compiled by ``train_model.py`` there,
whose notes say "added dice loss"). In that Keras code ``y_pred`` is the softmax output ``(N, H, W, C)``,
``y_true`` the one-hot reference and ``KB.epsilon()`` Keras' default ``eps = 1e-7``. Written here for
``(N, C, H, W)``, with ``g`` the one-hot reference and ``n[b, c]`` the count of class ``c`` in image ``b``; the
original's background is class 0, here the ``background`` code each function is given (``BACKGROUND``, 0 by default)::

    p   = clip(softmax(logits), eps, 1 - eps)                                  clipped before log AND Dice
    LL[b, c] = sum_pixels g[b, c] * log p[b, c] / (n[b, c] + eps)              per image, per class
    pf, gf = 1 - p[:, 0], 1 - g[:, 0]                                          fluid (any class but 0)
    Dice = 2 sum(pf gf) / (sum(pf) + sum(gf) + eps)                            sums over the WHOLE batch
    loss = mean_b( -0.5 * mean_c LL[b, c] + 0.5 * (1 - Dice) )
         = -0.5 * mean_{b,c} LL[b, c] + 0.5 * (1 - Dice)

Details checked against the original:

* **Clipping.** Probabilities are clipped to ``[eps, 1 - eps]`` before the log, so a pixel whose probability is
  below ``eps`` adds ``log eps`` and no gradient (as ``tf.clip_by_value``). The Dice term takes the same clipped
  ``p0`` (the original's ``p_0`` is a slice of the clipped ``y_pred_``).
* **Class normalisation is per image and per class**: the sum of ``log p`` over the pixels of class ``c`` in image
  ``b`` divided by ``n[b, c] + eps`` (a mean log-likelihood of that class in that image; ``eps``, not 1, is added).
* **An absent class** (``n[b, c] = 0``) gives ``0 / eps = 0``, and still counts in the mean over all ``C``
  classes (the original reshapes to ``(batch, 4)`` and takes ``KB.mean(axis=-1)``): it pulls the term towards 0,
  it is not left out.
* **Means.** The original returns one value per image, ``-0.5 * mean_c LL[b, c] + 0.5 * dice_loss``; Keras
  averages those over the batch. The Dice term is one number for the whole batch (``KB.sum`` with no axis), not a
  mean of per-image Dice scores.
* **Sign of the Dice term**: the original adds ``0.5 * (1 - Dice)`` (its ``dice_loss``). Written as
  ``-0.5 * (mean LL + Dice)`` the loss is the same minus the constant 0.5: same gradients, values 0.5 apart.
* **Smoothing**: none in the numerator; ``eps`` only in the Dice denominator, and ``2 tp + fp + fn`` there is
  ``sum(pf) + sum(gf)``.
* **A batch with no fluid pixel** (``gf = 0``): ``tp = 0``, so Dice = 0, ``1 - Dice = 1`` and its gradient is 0.

**smp's DiceLoss for the Dice term.** ``smp.losses.DiceLoss(mode="binary", from_logits=False, smooth=0)`` on
``pf`` against ``gf`` (smp 0.6.0) reshapes both to ``(N, 1, H*W)`` and sums over dims ``(0, 2)``: one score for
the whole batch, as the original. Its score is ``tp / clamp_min(tp + (fp + fn) / 2, eps)`` with
``tp = (sum(pf) + sum(gf) - |pf - gf|_1) / 2``, which equals ``sum(pf gf)`` for a 0/1 ``gf``, so the score is
``2 sum(pf gf) / max(sum(pf) + sum(gf), 2 eps)`` and the loss it returns ``1 - score``, the original's
``dice_loss``. Differences, none of which changes a gradient:

* ``eps`` is a floor on the denominator, not added to it: a relative difference under ``eps / (sum(pf) + sum(gf))``,
  at most ``1e-7`` whenever the batch holds a fluid pixel (``sum(gf) >= 1``), below float32 resolution. With no
  fluid pixel the score is 0 either way.
* The L1 form's gradient (``sign(pf - gf)``) equals the product form's as long as no ``pf`` equals its ``gf``
  exactly; the clipping keeps ``pf`` inside ``(0, 1)``, so it never does.
* smp zeroes its loss when the target holds no positive pixel (its "empty" rule), where the original's is
  ``1 - 0 = 1`` with zero gradient: :func:`fluid_dice_loss` adds that constant 1 back, so values match too.

Not here, because it is the network's business: the original's softmax is applied to a ReLU'd output (that is its
last layer), and its U-Net's valid convolutions make the output smaller than the input, so it centre-crops
``y_true`` to the output (``tf.image.resize_image_with_crop_or_pad``); here ``logits`` and ``target`` must have the
same height and width.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from utils.train.base import Loss

KERAS_EPSILON = 1e-7  # keras.backend.epsilon() default: the original's clip bound and denominator guard


def class_normalised_log_likelihood(probs: torch.Tensor, target: torch.Tensor,
                                    eps: float = KERAS_EPSILON) -> torch.Tensor:
    """Each image's mean log-probability of each class over that class's pixels (the original's ``cross_ent``).

    ``LL[b, c] = sum over pixels of class c in image b of log(p[b, c]) / (n[b, c] + eps)``, with ``p`` clipped to
    ``[eps, 1 - eps]`` and ``n[b, c]`` the pixel count of class ``c`` in image ``b``; 0 where ``n[b, c] = 0``.

    Args:
        probs: ``(N, C, H, W)`` float class probabilities (softmax over C), unclipped.
        target: ``(N, H, W)`` int64 label codes in ``0..C-1``.
        eps: clip bound of ``p`` and guard of the count.

    Returns:
        ``(N, C)`` tensor of ``probs``' dtype, values in ``[log eps, 0]``.
    """
    n_classes = probs.shape[1]
    log_p = probs.clamp(eps, 1.0 - eps).log()
    # One-hot masks pick each pixel's own class, then sums per (image, class) give the numerator and the count.
    one_hot = F.one_hot(target, n_classes).permute(0, 3, 1, 2).to(probs.dtype)
    summed = (log_p * one_hot).sum(dim=(2, 3))
    counts = one_hot.sum(dim=(2, 3))
    return summed / (counts + eps)


def fluid_dice_loss(background_prob: torch.Tensor, target: torch.Tensor, eps: float = KERAS_EPSILON,
                    background: int = 0) -> torch.Tensor:
    """The original's ``dice_loss``: ``1 - soft Dice`` of fluid (any class but the background) over the whole batch.

    ``1 - 2 sum(pf gf) / (sum(pf) + sum(gf))`` with ``pf = 1 - clip(p0, eps, 1 - eps)`` and
    ``gf = [target != background]``,
    from ``smp.losses.DiceLoss(mode="binary")``; 1 (with zero gradient) when the batch holds no fluid pixel, as in
    the original, where smp alone would return 0.

    Args:
        background_prob: ``(N, H, W)`` float probability of the background class, unclipped.
        target: ``(N, H, W)`` int64 label codes.
        eps: clip bound of ``p0``; also smp's floor of the Dice denominator.
        background: the background's label code (``BACKGROUND``; the original's 0).

    Returns:
        0-d tensor of ``background_prob``'s dtype, in ``[0, 1]``.
    """
    fluid_prob = 1.0 - background_prob.clamp(eps, 1.0 - eps)
    fluid_target = (target != background).to(fluid_prob.dtype)
    smp_dice = smp.losses.DiceLoss(mode="binary", from_logits=False, smooth=0.0, eps=eps)
    no_fluid = (fluid_target.sum() == 0).to(fluid_prob.dtype)  # a tensor test: no host synchronisation
    return smp_dice(fluid_prob.unsqueeze(1), fluid_target) + no_fluid


def rmit_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = KERAS_EPSILON, background: int = 0
              ) -> torch.Tensor:
    """The authors' loss: ``-0.5 * mean_{b,c} LL[b, c] + 0.5 * (1 - fluid Dice)`` (see the module docstring), of
    inputs already checked (:class:`RmitLoss` checks them).

    The softmax and everything after it run in float32, also under bf16/fp16 autocast.

    Args:
        logits: ``(N, C, H, W)`` float raw class scores (C >= 2), any float dtype.
        target: ``(N, H, W)`` int64 label codes in ``0..C-1``.
        eps: Keras' epsilon: probability clip bound, class-count guard and Dice denominator guard.
        background: the background's label code and channel (``BACKGROUND``; the original's 0).

    Returns:
        0-d float32 tensor, in ``[0, 0.5 * (-log eps) + 0.5]``; near 0 for confident correct logits on a batch
        holding fluid, 0.5 at best on a batch without.
    """
    with torch.autocast(device_type=logits.device.type, enabled=False):
        probs = logits.float().softmax(dim=1)
        log_likelihood = class_normalised_log_likelihood(probs, target, eps)
        return -0.5 * log_likelihood.mean() + 0.5 * fluid_dice_loss(probs[:, background], target, eps, background)


class RmitLoss(Loss):
    """:func:`rmit_loss` as a :class:`~utils.train.base.Loss` named ``"rmit"`` (``LOSS = "rmit"``); its inputs are
    checked (:func:`utils.train.base.check_segmentation_inputs`: ValueError for bad types, dtypes, shapes or label
    codes; no ignored code).

    Args:
        eps: as :func:`rmit_loss` (Keras' default 1e-7).
        background: the background's label code (``BACKGROUND``; the original's 0).
    """

    name = "rmit"

    def __init__(self, eps: float = KERAS_EPSILON, background: int = 0):
        super().__init__()
        self.eps, self.background = eps, background

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return rmit_loss(logits, target, self.eps, self.background)

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}, background={self.background}"
