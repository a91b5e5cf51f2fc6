"""Pieces shared by the losses and the metrics: input checks, and a loss base class that combines by arithmetic.

Every loss takes ``logits`` ``(N, C, H, W)`` float and ``target`` ``(N, H, W)`` int64 label codes ``0..C-1``
(config: 0 background, 1 IRF, 2 SRF, 3 PED) and returns a scalar. Losses combine with ``+`` and ``*`` by a
number, e.g. ``0.5 * BalancedCrossEntropyLoss() + 0.5 * DiceLoss()``, into a :class:`WeightedSum` whose
``name`` reads ``"0.5*balanced_ce + 0.5*dice"`` (the title of the loss curve in a run's curves.png).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def check_label_map(labels: torch.Tensor, n_classes: int, name: str = "target", ignore_label: int | None = None,
                    ) -> None:
    """Checks that ``labels`` is a batch of label maps (where ``ignore_label`` is given, it may hold that code too:
    pixels that count nowhere).

    Reads the minimum and maximum of ``labels`` (one device synchronisation on a GPU), because a code out of
    range would otherwise be dropped silently from metric counts or fail inside a CUDA kernel.

    Args:
        labels: ``(N, H, W)`` int64, values in ``0..n_classes-1``.
        n_classes: number of classes ``C`` (>= 1).
        name: what to call ``labels`` in the error message.
        ignore_label: a code allowed besides (pixels that count nowhere), or None.

    Raises:
        ValueError: ``labels`` is not a tensor, not int64, not 3-D, or holds a value outside ``0..n_classes-1``.
    """
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor (N, H, W) int64, got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise ValueError(f"{name}: expected dtype torch.int64 label codes 0..{n_classes - 1}, got {labels.dtype}; "
                         f"convert it with .long()")
    if labels.ndim != 3:
        raise ValueError(f"{name}: expected shape (N, H, W), got {tuple(labels.shape)}")
    if ignore_label is not None:
        labels = labels[labels != ignore_label]
    if labels.numel():
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= n_classes:
            raise ValueError(f"{name}: expected label codes 0..{n_classes - 1}, got values from {low} to {high}")


def check_segmentation_inputs(logits: torch.Tensor, target: torch.Tensor, n_classes: int | None = None,
                              ignore_label: int | None = None) -> None:
    """Checks the inputs of a segmentation loss (or of a metric given scores rather than labels).

    Args:
        logits: ``(N, C, H, W)`` float, raw scores (or probabilities) of ``C >= 2`` classes.
        target: ``(N, H, W)`` int64 label codes in ``0..C-1`` (or ``ignore_label``, when given), at least one pixel.
        n_classes: the ``C`` expected; None takes it from ``logits``.
        ignore_label: a code that marks pixels to leave out (``IGNORE_LABEL``), or None.

    Raises:
        ValueError: a tensor has the wrong type, dtype or shape, the shapes disagree, the batch holds no pixel,
            or ``target`` holds a code outside ``0..C-1``; the message says what was received and expected.
    """
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits: expected a torch.Tensor (N, C, H, W) float, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise ValueError(f"logits: expected a float tensor (N, C, H, W) of class scores, got dtype {logits.dtype}")
    if logits.ndim != 4:
        raise ValueError(f"logits: expected shape (N, C, H, W), got {tuple(logits.shape)}")
    batch, channels, height, width = logits.shape
    if n_classes is not None and channels != n_classes:
        raise ValueError(f"logits: expected C = {n_classes} class channels in (N, C, H, W), "
                         f"got shape {tuple(logits.shape)}")
    if channels < 2:
        raise ValueError(f"logits: expected C >= 2 class channels (background and at least one class), "
                         f"got shape {tuple(logits.shape)}")
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"target: expected a torch.Tensor (N, H, W) int64, got {type(target).__name__}")
    if tuple(target.shape) != (batch, height, width):
        raise ValueError(f"target: expected shape (N, H, W) = {(batch, height, width)} to match logits "
                         f"{tuple(logits.shape)}, got {tuple(target.shape)}")
    if target.numel() == 0:
        raise ValueError(f"target: expected at least one pixel, got shape {tuple(target.shape)}")
    check_label_map(target, channels, "target", ignore_label)


class Loss(nn.Module):
    """A segmentation loss: ``logits`` ``(N, C, H, W)`` float and ``target`` ``(N, H, W)`` int64 -> scalar.

    Subclasses set :attr:`name` and implement :meth:`compute`; :meth:`forward` checks the inputs once and then
    calls it, except for a target whose every pixel is the loss's :attr:`ignore_label` (a patch wholly in blank
    columns): nothing to learn from, a loss of 0 with zero gradients (the means over no pixel would be NaN).
    ``w * loss`` and ``loss_a + loss_b`` build a :class:`WeightedSum`.
    """

    name: str = "loss"
    ignore_label: int | None = None  # a target code this loss leaves out (IGNORE_LABEL, given to it), or None

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of ``logits`` against ``target`` (see :func:`check_segmentation_inputs` for what they hold).

        Raises:
            ValueError: bad shapes, dtypes or label codes.
        """
        check_segmentation_inputs(logits, target, ignore_label=self.ignore_label)
        if self.ignore_label is not None and bool((target == self.ignore_label).all()):
            return logits.sum() * 0.0
        return self.compute(logits, target)

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The loss of inputs already checked: a 0-d float tensor."""
        raise NotImplementedError

    def __add__(self, other: object) -> WeightedSum:
        if not isinstance(other, Loss):
            return NotImplemented
        return WeightedSum(_weighted_terms(self) + _weighted_terms(other))

    def __mul__(self, weight: object) -> WeightedSum:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return WeightedSum([(float(weight) * w, loss) for w, loss in _weighted_terms(self)])

    __rmul__ = __mul__


class WeightedSum(Loss):
    """``sum_k weight_k * loss_k`` of :class:`Loss` terms, named like ``"0.5*balanced_ce + 0.5*dice"``.

    Args:
        terms: ``(weight, loss)`` pairs; a weight of 1 is left out of the name.
    """

    def __init__(self, terms: Sequence[tuple[float, Loss]]):
        super().__init__()
        if not terms:
            raise ValueError("WeightedSum: expected at least one (weight, loss) term, got none")
        self.weights = [float(w) for w, _ in terms]
        self.losses = nn.ModuleList(loss for _, loss in terms)
        self.name = " + ".join(loss.name if w == 1.0 else f"{w:g}*{loss.name}"
                               for w, loss in zip(self.weights, self.losses))
        ignored = {loss.ignore_label for loss in self.losses}
        self.ignore_label = ignored.pop() if len(ignored) == 1 else None  # only when every term leaves it out

    def compute(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * loss.compute(logits, target) for w, loss in zip(self.weights, self.losses))

    def extra_repr(self) -> str:
        return repr(self.name)


def _weighted_terms(loss: Loss) -> list[tuple[float, Loss]]:
    """The ``(weight, loss)`` terms of ``loss``, flattened so that sums of sums stay one flat sum."""
    if isinstance(loss, WeightedSum):
        return list(zip(loss.weights, loss.losses))
    return [(1.0, loss)]
