"""Pixel metrics of a multi-class segmentation in training: Dice (F1), IoU, precision and recall, per class and
over fluids, on tensors of confusion counts (evaluation scores whole label volumes with
``utils/evaluate/volume_metrics.py`` ``dice_from_counts`` instead).

Everything is computed from confusion counts per class (true/false positives and negatives, from
``smp.metrics.get_stats`` in multiclass mode), so counts can be summed over batches, epochs and processes first
(micro averaging over pixels) and scored once: :class:`SegmentationMeter` does that for a validation epoch.

Scores, per class ``c``::

    dice = 2 tp / (2 tp + fp + fn)      iou = tp / (tp + fp + fn)
    precision = tp / (tp + fp)          recall = tp / (tp + fn)

**The empty case.** A class absent from both prediction and reference (``tp + fp + fn == 0``, common: most
B-scans and many volumes hold no fluid of a given type) has no defined score; every metric then returns
``empty_score``. The default, NaN, means "not measured": :func:`fluid_mean` leaves NaN out of the mean over
fluids (NaN only if no fluid was measured), so a model is neither rewarded nor punished for a fluid that neither
the data nor the model showed. ``empty_score=1.0`` counts agreement on absence as perfect (smp's
``zero_division=1.0``) and then enters the mean like any other score.

A class present in only one of prediction and reference scores 0 on every metric whose denominator is zero
(precision with nothing predicted, recall with nothing in the reference), as Dice and IoU do there. In particular
false positives on a reference without the class give Dice 0, not NaN: this is nnU-Net's rule (NaN only when
``tp + fp + fn == 0``), not MONAI's ``ignore_empty=True``, which gives NaN whenever the reference is empty,
whatever was predicted.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import segmentation_models_pytorch as smp
import torch
import torch.distributed as dist

from utils.model.runtime import collective_device
from utils.train.base import check_label_map, check_segmentation_inputs

METRICS = ("dice", "iou", "precision", "recall")


def to_label_map(prediction: torch.Tensor, reference: torch.Tensor, n_classes: int,
                 ignore_label: int | None = None) -> torch.Tensor:
    """Checks a prediction and its reference, and returns the prediction as labels.

    Args:
        prediction: ``(N, C, H, W)`` float logits or probabilities (the argmax over ``C`` is taken), or
            ``(N, H, W)`` int64 label codes in ``0..n_classes-1``.
        reference: ``(N, H, W)`` int64 label codes in ``0..n_classes-1`` (or ``ignore_label``).
        n_classes: number of classes ``C`` (``N_CLASSES``).
        ignore_label: a reference code of pixels that count nowhere (``IGNORE_LABEL``), or None.

    Returns:
        ``(N, H, W)`` int64 label codes on ``prediction``'s device.

    Raises:
        ValueError: wrong type, dtype or shape, shapes that disagree, or codes out of range.
    """
    if isinstance(prediction, torch.Tensor) and prediction.is_floating_point():
        check_segmentation_inputs(prediction, reference, n_classes, ignore_label=ignore_label)
        return prediction.detach().argmax(dim=1)
    if not isinstance(prediction, torch.Tensor) or prediction.dtype != torch.int64:
        got = f"dtype {prediction.dtype}" if isinstance(prediction, torch.Tensor) else type(prediction).__name__
        raise ValueError(f"prediction: expected (N, C, H, W) float scores or (N, H, W) int64 labels, got {got}")
    check_label_map(prediction, n_classes, "prediction")
    check_label_map(reference, n_classes, "reference", ignore_label)
    if prediction.shape != reference.shape:
        raise ValueError(f"reference: expected the shape of prediction {tuple(prediction.shape)}, "
                         f"got {tuple(reference.shape)}")
    return prediction


def confusion_counts(prediction: torch.Tensor, reference: torch.Tensor, n_classes: int,
                     ignore_label: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """True positives, false positives, false negatives and true negatives per image and class.

    Args:
        prediction: ``(N, C, H, W)`` float scores or ``(N, H, W)`` int64 labels (see :func:`to_label_map`).
        reference: ``(N, H, W)`` int64 label codes in ``0..n_classes-1``, or ``ignore_label``.
        n_classes: number of classes ``C`` (``N_CLASSES``).
        ignore_label: the reference code of pixels that are counted nowhere (``IGNORE_LABEL``), or None.

    Returns:
        ``(tp, fp, fn, tn)``, each ``(N, C)`` int64 pixel counts on the CPU (where ``smp.metrics.get_stats``
        puts them); ``tp + fp + fn + tn == H * W`` less the ignored pixels.

    Raises:
        ValueError: as :func:`to_label_map`.
    """
    labels = to_label_map(prediction, reference, n_classes, ignore_label)
    # contiguous: with ignore_index, get_stats views the maps flat (an arg-max of channels-last logits is strided)
    tp, fp, fn, tn = smp.metrics.get_stats(labels.contiguous(), reference.contiguous(), mode="multiclass",
                                           num_classes=n_classes, ignore_index=ignore_label)
    # get_stats runs under inference_mode; clone so the counts can be updated in place and all-reduced.
    return tp.clone(), fp.clone(), fn.clone(), tn.clone()


def _score(smp_metric: Callable[..., torch.Tensor], tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor,
           empty_score: float) -> torch.Tensor:
    """``smp_metric`` per element of the counts, with 0/0 -> 0 and the empty case -> ``empty_score``."""
    tp, fp, fn = (torch.as_tensor(count, dtype=torch.float64) for count in (tp, fp, fn))
    score = smp_metric(tp, fp, fn, torch.zeros_like(tp), reduction="none", zero_division=0.0)
    return torch.where(tp + fp + fn == 0, torch.full_like(score, empty_score), score)


def dice_score(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, empty_score: float = math.nan) -> torch.Tensor:
    """Dice (F1) ``2 tp / (2 tp + fp + fn)`` of confusion-count tensors of any one shape.

    Args:
        tp, fp, fn: int or float counts >= 0, the same shape (e.g. ``(C,)`` or ``(N, C)``).
        empty_score: the score where ``tp + fp + fn == 0`` (see the module docstring); NaN by default.

    Returns:
        float64, the counts' shape, values in ``[0, 1]`` or ``empty_score``.
    """
    return _score(smp.metrics.f1_score, tp, fp, fn, empty_score)


def iou_score(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, empty_score: float = math.nan) -> torch.Tensor:
    """IoU (Jaccard) ``tp / (tp + fp + fn)``; arguments and result as :func:`dice_score`."""
    return _score(smp.metrics.iou_score, tp, fp, fn, empty_score)


def precision_score(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, empty_score: float = math.nan
                    ) -> torch.Tensor:
    """Precision ``tp / (tp + fp)``, 0 if nothing was predicted but the reference holds the class; arguments and
    result as :func:`dice_score`."""
    return _score(smp.metrics.precision, tp, fp, fn, empty_score)


def recall_score(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, empty_score: float = math.nan
                 ) -> torch.Tensor:
    """Recall (sensitivity) ``tp / (tp + fn)``, 0 if the reference lacks the class but it was predicted;
    arguments and result as :func:`dice_score`."""
    return _score(smp.metrics.recall, tp, fp, fn, empty_score)


SCORE_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "dice": dice_score, "iou": iou_score, "precision": precision_score, "recall": recall_score}


def fluid_mean(scores: torch.Tensor, fluids: Mapping[str, int]) -> torch.Tensor:
    """The mean of per-class scores over the fluid classes (background excluded), leaving NaN scores out.

    Args:
        scores: ``(..., C)`` float per-class scores, NaN where not measured.
        fluids: fluid name -> class code (``FLUIDS``: IRF 1, SRF 2, PED 3).

    Returns:
        ``(...)`` float; NaN where every fluid score is NaN.
    """
    return torch.nanmean(scores[..., list(fluids.values())], dim=-1)


def named_scores(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, fluids: Mapping[str, int],
                 empty_score: float = math.nan) -> dict[str, float]:
    """Every metric per fluid and its mean over fluids, by name.

    Args:
        tp, fp, fn: ``(C,)`` counts per class (summed over the pixels scored).
        fluids: fluid name -> class code (``FLUIDS``).
        empty_score: the score of a class absent from prediction and reference (module docstring).

    Returns:
        ``{"dice_IRF", "dice_SRF", "dice_PED", "dice_mean_fluid", "iou_IRF", ..., "recall_mean_fluid"}``
        (with the default FLUIDS) -> float in ``[0, 1]`` or ``empty_score`` / NaN.
    """
    results = {}
    for metric in METRICS:
        per_class = SCORE_FUNCTIONS[metric](tp, fp, fn, empty_score)
        for fluid, code in fluids.items():
            results[f"{metric}_{fluid}"] = float(per_class[code])
        results[f"{metric}_mean_fluid"] = float(fluid_mean(per_class, fluids))
    return results


class SegmentationMeter:
    """Sums confusion counts per class over the batches of an epoch, then scores them (micro over pixels).

    Holds ``4 x C`` integers, not the predictions. Under DistributedDataParallel each process updates with its
    own batches and :meth:`compute` sums the counts of all processes first (a collective: call it on every rank).

    Example::

        meter = SegmentationMeter(cfg.N_CLASSES, cfg.FLUIDS, ignore_label=cfg.IGNORE_LABEL)
        for images, reference in val_loader:
            meter.update(model(images), reference)
        results = meter.compute()  # {"dice_IRF": ..., "dice_mean_fluid": ..., ...}

    Args:
        n_classes: number of classes ``C`` (``N_CLASSES``).
        fluids: fluid name -> class code (``FLUIDS``); the classes that are named and averaged.
        empty_score: the score of a class absent from prediction and reference over the whole epoch.
        ignore_label: the reference code of pixels counted nowhere (``IGNORE_LABEL``), or None.
    """

    def __init__(self, n_classes: int, fluids: Mapping[str, int], empty_score: float = math.nan,
                 ignore_label: int | None = None):
        bad = {name: code for name, code in fluids.items() if not 0 <= code < n_classes}
        if bad:
            raise ValueError(f"fluids: expected class codes in 0..{n_classes - 1}, got {bad}")
        self.n_classes = n_classes
        self.fluids = dict(fluids)
        self.empty_score = empty_score
        self.ignore_label = ignore_label
        self.reset()

    def reset(self) -> None:
        """Forgets every count (at the start of an epoch)."""
        self.counts = torch.zeros(4, self.n_classes, dtype=torch.int64)  # rows tp, fp, fn, tn; CPU

    @torch.no_grad()
    def update(self, prediction: torch.Tensor, reference: torch.Tensor) -> None:
        """Adds the counts of one batch.

        Args:
            prediction: ``(N, C, H, W)`` float logits or probabilities, or ``(N, H, W)`` int64 labels.
            reference: ``(N, H, W)`` int64 label codes in ``0..C-1``, or the meter's ``ignore_label``.

        Raises:
            ValueError: as :func:`to_label_map`.
        """
        batch_counts = confusion_counts(prediction, reference, self.n_classes, self.ignore_label)
        self.counts += torch.stack([count.sum(dim=0) for count in batch_counts])

    def all_reduce_counts(self) -> torch.Tensor:
        """The counts summed over all processes when torch.distributed is initialised, else a copy of this one's.

        Leaves this process's own counts unchanged, so calling it twice never counts a batch twice. A
        collective when distributed: every rank must call it.

        Returns:
            ``(4, C)`` int64 on the CPU, rows tp, fp, fn, tn.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return self.counts.clone()
        counts = self.counts.to(collective_device(), copy=True)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        return counts.cpu()

    def compute(self, distributed: bool = True) -> dict[str, float]:
        """Scores the counts so far (of all processes, when ``distributed`` and torch.distributed is initialised).

        Returns:
            the dict of :func:`named_scores`: ``dice_IRF``, ``dice_SRF``, ``dice_PED``, ``dice_mean_fluid``, then
            the same for ``iou``, ``precision`` and ``recall``.
        """
        tp, fp, fn, _ = self.all_reduce_counts() if distributed else self.counts
        return named_scores(tp, fp, fn, self.fluids, self.empty_score)
