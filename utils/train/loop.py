"""The segmenter's training step, one training epoch, one validation pass, the adversarial step, and the run
folder's log and plot.

train.py wires these together (bench/bench_train.py times :func:`train_step` of :func:`new_segmenter`); they are
functions of explicit arguments so tests can drive them directly.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from utils.io.files import atomic_path, atomic_write_csv
from utils.model.deep_supervision import DeepOutputs, deep_supervision_loss
from utils.model.networks import build_unet, centre_crop
from utils.model.rmit_unet import l2_penalty
from utils.model.runtime import Runtime, collective_device
from utils.train.metrics import SegmentationMeter

LOG_CSV = "log.csv"
CURVES_PNG = "curves.png"
BEST_METRIC = "dice_mean_fluid"  # the validation Dice drawn bold in the plot


@dataclasses.dataclass
class Adversary:
    """The method's adversarial part: a discriminator, its optimiser, the weight lambda of its loss, the L2 factor
    on its kernels, and how it steps (``ADVERSARIAL_STEP``, a name of :data:`ADVERSARIAL_STEPS`): first, on one
    concatenated real + fake batch (the original), or after the segmenter on separate real and fake batches."""

    discriminator: nn.Module
    optimizer: torch.optim.Optimizer
    weight: float
    l2_weight: float = 0.0
    step: str = "discriminator_first"


def one_hot(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(N, H, W)`` int64 labels -> ``(N, C, H, W)`` float32 one-hot."""
    return F.one_hot(labels, n_classes).permute(0, 3, 1, 2).float()


def adversarial_losses(adversary: Adversary, images: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's loss and the segmenter's adversarial loss for one batch.

    The discriminator learns to call (image, reference one-hot) pairs real and (image, softmax) pairs fake; the
    segmenter is rewarded when its softmax passes for real. The original fed the discriminator arg-max one-hot
    predictions, which passes no gradient to the segmenter; we feed the probabilities.

    Returns:
        ``(discriminator_loss, segmenter_adversarial_loss)``; the first sees the softmax detached.
    """
    images, probabilities, reference = critic_inputs(images, logits, masks)
    real = adversary.discriminator(images, reference)
    fake = adversary.discriminator(images, probabilities.detach())
    discriminator_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                          + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2
    return discriminator_loss, fooling_loss(adversary, images, probabilities)


def critic_inputs(images: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the discriminator sees of a batch: ``(images centre-cropped to what an unpadded segmenter's output covers,
    the softmax (N, C, h, w) float32 with its gradient, the reference one-hot (N, C, h, w))``."""
    images = centre_crop(images, logits.shape[-2:])
    probabilities = logits.float().softmax(dim=1)
    return images, probabilities, one_hot(masks, logits.shape[1]).to(probabilities)


def fooling_loss(adversary: Adversary, images: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """The segmenter's adversarial loss: binary cross-entropy of its (image, softmax) pairs labelled real."""
    fooled = adversary.discriminator(images, probabilities)
    return F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))


def discriminator_step(adversary: Adversary, images: torch.Tensor, probabilities: torch.Tensor,
                       reference: torch.Tensor, runtime: Runtime) -> float:
    """The original's discriminator step (``ADVERSARIAL_STEP = "discriminator_first"``): one batch of the
    (image, reference one-hot) pairs labelled real and the (image, softmax) pairs labelled fake, concatenated (16 + 16
    = 32 with the original's batch size), its loss plus the L2 on its kernels, one optimiser step. The softmax is
    detached: this step trains the discriminator only.

    Args:
        images, probabilities, reference: :func:`critic_inputs` of the batch.

    Returns:
        The discriminator's loss (without the L2).
    """
    with runtime.autocast():
        scores = adversary.discriminator(torch.cat([images, images]), torch.cat([reference, probabilities.detach()]))
    targets = torch.cat([torch.ones(len(images)), torch.zeros(len(images))]).to(scores)
    loss = F.binary_cross_entropy_with_logits(scores.float(), targets.float())
    objective = loss + (l2_penalty(adversary.discriminator, adversary.l2_weight) if adversary.l2_weight else 0.0)
    adversary.optimizer.zero_grad(set_to_none=True)
    objective.backward(inputs=list(adversary.discriminator.parameters()))
    average_gradients(adversary.discriminator)
    adversary.optimizer.step()
    return float(loss.detach())


def _discriminator_first(adversary: Adversary, images: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor,
                         runtime: Runtime) -> tuple[torch.Tensor, None]:
    """``ADVERSARIAL_STEP = "discriminator_first"`` (the original): the discriminator steps now
    (:func:`discriminator_step`). Returns the segmenter's adversarial loss against the updated discriminator, and
    nothing to do after the segmenter's step."""
    critic_images, probabilities, reference = critic_inputs(images, logits, masks)
    discriminator_step(adversary, critic_images, probabilities, reference, runtime)
    with runtime.autocast():
        return fooling_loss(adversary, critic_images, probabilities), None


def _separate(adversary: Adversary, images: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor,
              runtime: Runtime) -> tuple[torch.Tensor, Callable[[], None]]:
    """``ADVERSARIAL_STEP = "separate"``: both losses on separate real and fake batches
    (:func:`adversarial_losses`). Returns the segmenter's adversarial loss, and the discriminator's step (its loss
    plus the L2 on its kernels), to take after the segmenter's."""
    with runtime.autocast():
        discriminator_loss, adversarial_loss = adversarial_losses(adversary, images, logits, masks)

    def discriminator_after() -> None:
        objective = discriminator_loss
        if adversary.l2_weight:
            objective = objective + l2_penalty(adversary.discriminator, adversary.l2_weight)
        adversary.optimizer.zero_grad(set_to_none=True)
        objective.float().backward(inputs=list(adversary.discriminator.parameters()))
        average_gradients(adversary.discriminator)
        adversary.optimizer.step()

    return adversarial_loss, discriminator_after


# ADVERSARIAL_STEP -> (adversary, images, logits, masks, runtime) -> (the segmenter's adversarial loss, the
# discriminator's step to take after the segmenter's, or None); the names are utils/configuration.py's
# CHOICES["ADVERSARIAL_STEP"], checked there
ADVERSARIAL_STEPS = {"discriminator_first": _discriminator_first, "separate": _separate}


def new_segmenter(model_args: dict[str, Any], runtime: Runtime) -> nn.Module:
    """A freshly initialised network of ``model_args`` (:func:`utils.model.networks.unet_arguments`) on the
    runtime's device, in channels-last memory format where the runtime says (``CHANNELS_LAST``)."""
    model = build_unet(model_args).to(runtime.device)
    return model.to(memory_format=torch.channels_last) if runtime.channels_last else model


def train_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], optimizer: torch.optim.Optimizer,
               loss_fn: nn.Module, runtime: Runtime, adversary: Adversary | None = None,
               regulariser: Callable[[], torch.Tensor | float] = lambda: 0.0,
               before_step: Callable[[], None] = lambda: None, after_step: Callable[[], None] = lambda: None,
               ) -> torch.Tensor:
    """One optimiser step of the segmenter on one batch (and the adversary's, when there is one): forward under the
    runtime's autocast, the targets centre-cropped to an unpadded network's output, ``loss_fn`` in float32 plus the
    ``regulariser`` (and the adversarial loss), backward into the segmenter's parameters only, the optimiser step.

    Args:
        batch: ``(images (N, 3, H, W) float32, masks (N, H, W) int64)`` on any device.
        regulariser, before_step, after_step: as :func:`train_epoch`.

    Returns:
        The segmentation loss of the network's output (without the regulariser, and with ``DEEP_SUPERVISION`` without
        the coarser outputs' share, which the step also minimises: so it compares with the validation loss): a 0-d
        tensor on the runtime's device, detached (reading it waits for the device).
    """
    images, masks = runtime.to_device(batch[0]), batch[1].to(runtime.device, non_blocking=True)
    with runtime.autocast():
        logits = model(images)
    auxiliary = ()
    if isinstance(logits, DeepOutputs):  # DEEP_SUPERVISION: the coarser outputs join the loss
        logits, auxiliary = logits
    masks = centre_crop(masks, logits.shape[-2:])  # an unpadded network labels only the patch's centre
    loss = loss_fn(logits.float(), masks)
    supervised = deep_supervision_loss(loss, auxiliary, masks, loss_fn) if auxiliary else loss
    objective, discriminator_after = supervised + regulariser(), None
    if adversary is not None:
        adversarial_loss, discriminator_after = ADVERSARIAL_STEPS[adversary.step](
            adversary, images, logits, masks, runtime)
        objective = objective + adversary.weight * adversarial_loss.float()
    optimizer.zero_grad(set_to_none=True)
    objective.backward(inputs=list(model.parameters()))  # the discriminator is not trained by this loss
    before_step()
    optimizer.step()
    after_step()
    if discriminator_after is not None:
        discriminator_after()
    return loss.detach()


def train_epoch(model: nn.Module, batches: Iterable, optimizer: torch.optim.Optimizer, loss_fn: nn.Module,
                runtime: Runtime, adversary: Adversary | None = None, description: str = "train",
                regulariser: Callable[[], torch.Tensor | float] = lambda: 0.0, n_batches: int | None = None,
                deadline: float | None = None, before_step: Callable[[], None] = lambda: None,
                after_step: Callable[[], None] = lambda: None) -> float:
    """Trains on the batches (``n_batches`` of them, or all the iterable holds when None, a :func:`train_step`
    each), stopping early at ``deadline``.

    Under DDP the ranks stay in step: before each batch they agree (:func:`all_ranks_go`) to go on only while every
    rank has a batch and none has passed the deadline, so all run the same steps and reach the closing mean
    together. A one-pass epoch gives ranks unequal batch counts (fluid-free patches are dropped at random); the
    longer ranks' surplus batches of that pass are not trained on.

    Args:
        regulariser: a penalty added to the segmenter's objective each step (e.g. the L2 on conv kernels).
        deadline: a ``time.perf_counter()`` value after which no further batch starts (a training time budget:
            one pass of the original's epoch can take hours on a CPU); at least one batch is trained.
        before_step: called before each optimiser step of the segmenter (the learning-rate schedule).
        after_step: called after it (the moving average of the weights).

    Returns:
        The mean segmentation loss (without the regulariser), averaged over all ranks.
    """
    model.train()
    total, count = 0.0, 0
    batches = iter(batches)
    with tqdm(total=n_batches, desc=description, unit="batch", disable=not runtime.is_main, leave=False) as bar:
        while n_batches is None or count < n_batches:
            timed_out = count > 0 and deadline is not None and time.perf_counter() >= deadline
            batch = None if timed_out else next(batches, None)  # no batch drawn to be thrown away
            if not all_ranks_go(batch is not None and not timed_out, runtime):
                break
            total += float(train_step(model, batch, optimizer, loss_fn, runtime, adversary, regulariser,
                                      before_step, after_step))
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
    return _mean_over_ranks(total, count)


def all_ranks_go(go: bool, runtime: Runtime) -> bool:
    """True when ``go`` holds on every rank (one ``all_reduce`` with MIN under DDP; ``go`` itself otherwise). Every
    rank must call it at the same point: then they all take the same branch."""
    if not runtime.distributed:
        return go
    flag = torch.tensor([float(go)], device=collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


@torch.no_grad()
def validate(model: nn.Module, batches: Iterable, loss_fn: nn.Module, runtime: Runtime, n_classes: int,
             fluids: dict[str, int], penalty: float = 0.0, ignore_label: int | None = None) -> dict[str, float]:
    """Loss and per-class / mean-fluid metrics over the validation batches (each rank scores every
    ``world_size``-th batch, so the ranks' batch counts may differ by one, or be 0 on some: ``model`` is the bare
    network, not its DistributedDataParallel wrapper, whose every forward pass is a collective; the metrics are
    summed over the ranks at the end).

    Args:
        penalty: added to the mean loss (the L2 on conv kernels, as the original's Keras test loss holds it).
        ignore_label: the target code of pixels the metrics count nowhere (``IGNORE_LABEL``), or None.

    Returns:
        ``{"val_loss": ..., "dice_IRF": ..., "dice_mean_fluid": ..., "iou_...": ..., ...}`` (see
        :class:`utils.train.metrics.SegmentationMeter`; NaN where a fluid is absent from prediction and reference).
    """
    model.eval()
    meter = SegmentationMeter(n_classes, fluids, ignore_label=ignore_label)
    total, count = 0.0, 0
    for images, masks in itertools.islice(batches, runtime.rank, None, runtime.world_size):
        images, masks = runtime.to_device(images), masks.to(runtime.device)
        with runtime.autocast():
            logits = model(images)
        logits = logits.float()
        masks = centre_crop(masks, logits.shape[-2:])
        total += float(loss_fn(logits, masks)) * len(masks)
        count += len(masks)
        meter.update(logits.argmax(dim=1).cpu(), masks.cpu())
    return {"val_loss": _mean_over_ranks(total, count) + penalty, **meter.compute(distributed=runtime.distributed)}


@torch.no_grad()
def reestimate_batch_norms(model: nn.Module, batches: Iterator, n_batches: int, runtime: Runtime) -> int:
    """The batch norms' running statistics computed afresh over ``n_batches`` batches with the current weights
    (``BN_REESTIMATE_BATCHES``), as ``torch.optim.swa_utils.update_bn`` does: statistics reset, then a cumulative
    average (momentum None) over forward passes in training mode, then each layer's momentum restored. The weights
    and the optimiser are untouched; under DDP the ranks' statistics are averaged.

    Args:
        batches: an iterator of ``(images, masks)`` batches (its own stream, so the training stream is unchanged).

    Returns:
        The batches used (fewer than ``n_batches`` when the iterator ends; 0 when the model has no batch norm).
    """
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)
             and module.track_running_stats]
    if not norms or n_batches <= 0:
        return 0
    momenta = [norm.momentum for norm in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    used = 0
    # its own random numbers (dropout in training mode draws some): the training stream's stay as they were
    with torch.random.fork_rng(devices=[runtime.device] if runtime.device.type == "cuda" else []):
        for images, _ in itertools.islice(batches, n_batches):
            with runtime.autocast():
                model(runtime.to_device(images))
            used += 1
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
        if runtime.distributed:
            for statistic in (norm.running_mean, norm.running_var):
                dist.all_reduce(statistic)
                statistic /= runtime.world_size
    model.train(was_training)
    return used


def average_gradients(module: nn.Module) -> None:
    """Averages ``module``'s gradients over DDP ranks (for the discriminator, which is not DDP-wrapped because
    it runs several forward passes per step)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for parameter in module.parameters():
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= dist.get_world_size()


def broadcast_buffers(model: nn.Module, runtime: Runtime) -> None:
    """Every rank's buffers (batch-norm running statistics) set to rank 0's, as DistributedDataParallel does before
    each forward pass; nothing without DDP. :func:`validate` takes the bare network, so that ranks with different
    numbers of validation batches do not wait on each other's per-batch broadcasts (a hang)."""
    if runtime.distributed:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _mean_over_ranks(total: float, count: int) -> float:
    if dist.is_available() and dist.is_initialized():
        sums = torch.tensor([total, float(count)], dtype=torch.float64, device=collective_device())
        dist.all_reduce(sums)
        total, count = float(sums[0]), float(sums[1])
    return total / count if count else math.nan


# BEST_BY -> the sign that makes a higher score better: the lowest validation loss (the original) or the highest
# mean fluid Dice; the names are utils/configuration.py's CHOICES["BEST_BY"], checked there
BEST_BY = {"val_loss": -1.0, "dice_mean_fluid": 1.0}


def score_of(metrics: dict[str, float], best_by: str) -> float:
    """The number that picks the best checkpoint (higher is better; NaN counts as the worst).

    Args:
        metrics: an epoch's validation metrics.
        best_by: the metric, a name of :data:`BEST_BY` (``BEST_BY``).
    """
    value = metrics.get(best_by, math.nan)
    if value is None or math.isnan(value):
        return -math.inf
    return BEST_BY[best_by] * value


def append_log(run_dir: Path, row: dict[str, Any]) -> pd.DataFrame:
    """Adds one epoch's row to ``log.csv`` (rewritten atomically; rows of later epochs from an interrupted run
    are dropped first) and returns the whole log."""
    path = run_dir / LOG_CSV
    log = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if len(log):
        log = log[log["epoch"] < row["epoch"]]
    log = pd.concat([log, pd.DataFrame([row])], ignore_index=True)
    atomic_write_csv(path, log)
    return log


def plot_curves(log: pd.DataFrame, path: Path, loss_name: str) -> None:
    """Loss (titled ``loss_name``) and validation Dice per epoch as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axis, dice_axis) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axis.plot(log["epoch"], log["train_loss"], label="train")
    if "val_loss" in log and log["val_loss"].notna().any():
        loss_axis.plot(log["epoch"], log["val_loss"], label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title=loss_name)
    loss_axis.legend()
    for column in [c for c in log.columns if c.startswith("dice_")]:
        if log[column].notna().any():
            dice_axis.plot(log["epoch"], log[column], label=column.removeprefix("dice_"),
                           linewidth=2.5 if column == BEST_METRIC else 1.2)
    dice_axis.set(xlabel="epoch", ylabel="Dice", ylim=(0, 1), title="validation Dice")
    if dice_axis.lines:
        dice_axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=90)
    plt.close(figure)


class EpochTimer:
    """Seconds since construction (for the log)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
