"""train.py as a Python API: a training run (:func:`train_model`, or :func:`run_training` with train.py's
arguments), from the prepared slices to the run folder, and the steps it takes: the effective config and run folder
(:func:`resolve_run`), the network and what trains it (:func:`build_training`), the epochs (:func:`fit`).

Example::

    from utils.train.session import train_model

    run_dir = train_model("work", "work/runs/quick", preset="improved", EPOCHS=1, BATCHES_PER_EPOCH=2, VAL_BSCANS=1)
    print(sorted(path.name for path in run_dir.iterdir()))  # best.pt, config.json, curves.png, last.pt, log.csv, ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import sys
import time
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import config
from utils.configuration import (ConfigError, config_from_dict, config_to_dict, keyword_overrides, load_config,
                                 save_config)
from utils.io.files import remove_stale_temporaries
from utils.io.outputs import check_outputs
from utils.io.run_lock import run_lock
from utils.io import layout
from utils.model.checkpoints import (MODEL_INPUT_SETTINGS, latest_checkpoint, load_checkpoint, make_checkpoint,
                                     save_checkpoint)
from utils.model.deep_supervision import HEADS_PREFIX, without_heads
from utils.model.networks import (MODELS, UNNAMED_MODEL, NetworkSettings, build_discriminator, network_label,
                                  network_setting_names, unet_arguments)
from utils.model.runtime import Runtime, RuntimeSettings, select_runtime, training_runtime
from utils.train.data_pipeline import (SliceRecord, TrainingDataSettings, loader_workers, read_split_slices,
                                       slice_records, training_batches, training_loader, validation_batches)
from utils.train.loop import (CURVES_PNG, Adversary, EpochTimer, all_ranks_go, append_log, broadcast_buffers,
                              new_segmenter, plot_curves, reestimate_batch_norms, score_of, train_epoch, validate)
from utils.train.losses import LOSSES, LossSettings, make_loss
from utils.train.optimizers import OptimizerSettings, make_optimizer, weight_penalty
from utils.train.schedule import LearningRateSchedule

log = logging.getLogger("train")
RUN_LOCK = ".train.lock"  # in the run folder: held by the run training into it (utils/io/run_lock.py)
BN_STREAM_SEED_OFFSET = 7919  # BN_REESTIMATE_BATCHES draws its batches with SEED + this (+ the epoch resumed after)


@dataclasses.dataclass(frozen=True)
class TrainingRequest:
    """What a training run is asked to do: train.py's command line (its argparse namespace has these attributes).

    Attributes:
        overrides: ``NAME=VALUE`` settings over config.py (a preset's first), as ``--set`` gives them.
        work_dir: where prepare_data.py wrote its outputs; None: ``WORK_DIR``.
        run_dir: the run folder; None: ``WORK_DIR/runs/<date-time>`` (with ``resume``: the most recent run).
        resume: continue the run in ``run_dir`` from its last checkpoint.
        init_from: start a new run from this checkpoint's network weights.
    """

    overrides: Sequence[str] = ()
    work_dir: str | os.PathLike | None = None
    run_dir: str | os.PathLike | None = None
    resume: bool = False
    init_from: Path | None = None


def train_model(work_dir: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None, *,
                resume: bool = False, init_from: str | os.PathLike | None = None, preset: str | None = None,
                **settings: Any) -> Path:
    """Trains as ``python train.py`` does (the same settings rule, steps and run folder), from Python.

    Args:
        work_dir: where prepare_data.py wrote its outputs (default: ``WORK_DIR``).
        run_dir: the run folder (default: ``WORK_DIR/runs/<date-time>``; with ``resume``, the most recent run).
        resume: continue the run from its last checkpoint (``--resume``).
        init_from: start from this checkpoint's network weights (``--init-from``).
        preset: a name in ``config.PRESETS`` (``--preset``), applied before ``settings``.
        **settings: settings of config.py by name, as ``--set`` (e.g. ``EPOCHS=5``, ``SEED=1``).

    Returns:
        The run folder: ``config.json``, ``train.log``, ``log.csv``, ``curves.png``, ``last.pt``, ``best.pt``.

    Raises:
        ConfigError: an unknown setting or preset, a value of the wrong type or that cannot work, a run folder that
            holds a run without ``resume``.
        OSError, ValueError: unusable prepared data, an unwritable run folder, a diverged training.
    """
    if preset is not None and preset not in config.PRESETS:
        raise ConfigError(f"preset {preset!r}: expected one of {', '.join(config.PRESETS)}")
    overrides = [*(config.PRESETS[preset] if preset else ()), *keyword_overrides(settings)]
    try:
        return run_training(TrainingRequest(overrides, work_dir, run_dir, resume,
                                            Path(init_from) if init_from is not None else None))
    finally:
        close_log_handlers()  # the run's train.log is complete and closed


@dataclasses.dataclass
class TrainingState:
    """The network and what trains it, at the start of the next epoch."""

    model_args: dict
    model: nn.Module
    optimizer: torch.optim.Optimizer
    adversary: Adversary | None
    epoch: int = 0  # epochs completed
    best_score: float = -math.inf
    average: AveragedModel | None = None  # EMA_DECAY > 0: the moving average of the weights, validated and saved

    @property
    def kept_model(self) -> nn.Module:
        """The network validated and saved: the moving average when there is one, else the trained weights."""
        return self.average.module if self.average is not None else self.model


def run_exists(run_dir: Path, cfg) -> ConfigError:
    """The refusal of a new run in a folder that holds one."""
    return ConfigError(f"{run_dir}: already holds a run ({cfg.LAST_CHECKPOINT}); continue it with --resume or "
                       f"choose another --run-dir")


def resolve_run(args: TrainingRequest) -> tuple[types.SimpleNamespace, Path | None, dict | None]:
    """The effective config, the run folder (None: a new one) and, with ``--resume``, the checkpoint to continue.

    Raises:
        ConfigError: ``--run-dir`` holds a run and ``--resume`` was not given.
    """
    overrides = [*args.overrides, *([f"WORK_DIR={args.work_dir}"] if args.work_dir else [])]
    cfg = load_config(overrides)
    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.resume and args.init_from:
        raise ConfigError("--resume and --init-from exclude each other: --resume continues a run, --init-from starts "
                          "a new one from another run's weights")
    if not args.resume:
        if run_dir is not None and (run_dir / cfg.LAST_CHECKPOINT).exists():
            raise run_exists(run_dir, cfg)
        return cfg, run_dir, None
    runs_dir = layout.run_dir(cfg.WORK_DIR, "", cfg.RUNS_SUBDIR)
    run_dir = run_dir or latest_checkpoint(runs_dir, cfg.LAST_CHECKPOINT, " to resume").parent
    checkpoint = load_checkpoint(run_dir / cfg.LAST_CHECKPOINT)
    # the run's own settings, with this command's overrides (e.g. more EPOCHS) on top
    cfg = load_config(overrides, base=vars(config_from_dict(checkpoint["config"])))
    return cfg, run_dir, checkpoint


def read_records(work_dir: Path, cfg) -> tuple[list[SliceRecord], list[SliceRecord]]:
    """The training and validation B-scans of the split (read before any run folder is made).

    Raises:
        ValueError: the split has no labelled training B-scan.
    """
    train_records = slice_records(read_split_slices(work_dir, "train", cfg.SPLIT_SLICES_CSV, cfg.FLUIDS), cfg.FLUIDS)
    if not train_records:
        raise ValueError(f"{work_dir / cfg.SPLIT_SLICES_CSV.format(split='train')}: no labelled B-scans to train "
                         f"on; check the split")
    return train_records, slice_records(read_split_slices(work_dir, "val", cfg.SPLIT_SLICES_CSV, cfg.FLUIDS),
                                        cfg.FLUIDS)


def open_run_dir(run_dir: Path | None, cfg, runtime: Runtime) -> Path:
    """The run folder (named by rank 0 and shared with the other ranks), created, with logging set up in it."""
    if run_dir is None:
        run_dir = layout.run_dir(cfg.WORK_DIR, time.strftime("%Y%m%d-%H%M%S"), cfg.RUNS_SUBDIR)
    if runtime.distributed:
        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if runtime.distributed:
        dist.barrier()
    log.setLevel(logging.INFO if runtime.is_main else logging.WARNING)
    close_log_handlers()
    log.propagate = False  # its own console handler prints each line once
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(console)
    if runtime.is_main:
        file_handler = logging.FileHandler(run_dir / "train.log")
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(file_handler)
    return run_dir


def close_log_handlers() -> None:
    """Closes and removes the training log's handlers (its ``train.log`` file above all): at the end of a run, so a
    second run in the same process neither writes into the first's file nor keeps it open."""
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def histogram_reference(work_dir: Path, cfg, checkpoint: dict | None) -> dict | None:
    """The preprocessing's histogram reference, stored in every checkpoint for predict.py."""
    if checkpoint:
        return checkpoint.get("histogram_reference")
    path = work_dir / cfg.HISTOGRAM_REFERENCE_JSON
    return json.loads(path.read_text()) if path.is_file() else None


def initial_weights(path: Path, model_args: dict[str, Any], patch_shape: Sequence[int]) -> dict:
    """The network weights of ``--init-from``, checked against this run's network (``model_args``:
    :func:`utils.model.networks.unet_arguments`) and ``PATCH_SHAPE`` before any training.

    ``DEEP_SUPERVISION`` may differ: its heads train beside the network and are not used at inference, so a run with
    them starts from a network trained without (its heads start fresh: :func:`build_training`), and a run without
    them from one trained with (its heads' weights are left out).

    Raises:
        FileNotFoundError, ValueError: not a readable checkpoint.
        ConfigError: a checkpoint of another network, class count or patch shape; the message names the file.
    """
    checkpoint = load_checkpoint(path)
    theirs, ours = checkpoint["model_args"], model_args
    their_shape = tuple((checkpoint.get("config") or {}).get("PATCH_SHAPE") or ())

    def compared(args: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in args.items() if key not in ("name", "deep_supervision")}

    problems = [f"{what} {a!r} (this run: {b!r})" for what, a, b in (
        ("network", theirs.get("name", UNNAMED_MODEL), ours["name"]),
        ("arguments", compared(theirs), compared(ours)),
        ("patch shape", their_shape, tuple(patch_shape))) if a != b]
    if problems:
        raise ConfigError(f"{path}: --init-from needs a checkpoint of the same network; it holds "
                          + "; ".join(problems))
    return checkpoint["model_state"] if ours.get("deep_supervision") else without_heads(checkpoint["model_state"])


def model_settings(saved, cfg) -> tuple[str, ...]:
    """The settings that belong to the model a run trains, which ``--resume`` keeps: those its network is built
    from (:func:`utils.model.networks.network_setting_names` of the run's ``MODEL`` and of the given one: ``MODEL``,
    ``N_CLASSES``, ``ENCODER``, ...), and those that turn a volume into the network's input and its output into
    labels, which the models of an ensemble share (``utils/model/checkpoints.py`` ``MODEL_INPUT_SETTINGS``: label
    codes, preprocessing, patch shape, input scaling)."""
    return tuple(dict.fromkeys((*network_setting_names(saved.MODEL), *network_setting_names(cfg.MODEL),
                                *MODEL_INPUT_SETTINGS)))


def check_training_settings(cfg, checkpoint: dict | None) -> None:
    """Raises ConfigError for settings that cannot work together, or with the run being resumed: checked before
    anything is written."""
    if cfg.BLANK_COLUMNS_IGNORED and (not LOSSES[cfg.LOSS].ignores_label or cfg.ADVERSARIAL):
        ignoring = " or ".join(repr(name) for name, loss in LOSSES.items() if loss.ignores_label)
        raise ConfigError(f"BLANK_COLUMNS_IGNORED=True needs LOSS {ignoring} without ADVERSARIAL (got "
                          f"LOSS={cfg.LOSS!r}, ADVERSARIAL={cfg.ADVERSARIAL}): the authors' loss and critic take no "
                          f"ignored pixels")
    if checkpoint:
        saved = config_from_dict(checkpoint.get("config") or {})
        if saved.OPTIMIZER != cfg.OPTIMIZER:
            raise ConfigError(f"OPTIMIZER={cfg.OPTIMIZER!r}: the run was trained with {saved.OPTIMIZER!r}, whose "
                              f"state --resume continues; start a new run (--init-from its checkpoint) to change it")
        for name in model_settings(saved, cfg):
            given, trained = getattr(cfg, name), getattr(saved, name)
            if given != trained:
                raise ConfigError(f"{name}={given!r}: the run was trained with {name}={trained!r}, a setting of its "
                                  f"model, which --resume keeps; start a new run to change it")


def build_training(cfg, model_args: dict[str, Any], runtime: Runtime, checkpoint: dict | None,
                   init_state: dict | None = None) -> TrainingState:
    """The network of ``model_args`` (:func:`utils.model.networks.unet_arguments`), its optimiser and the optional
    adversary, restored from ``checkpoint`` when resuming."""
    network = MODELS[cfg.MODEL]
    if not network.accepts_patch(cfg.PATCH_SHAPE):
        raise ConfigError(f"PATCH_SHAPE={tuple(cfg.PATCH_SHAPE)}: {cfg.MODEL} needs {network.patch_rule}")
    model = new_segmenter(model_args, runtime)
    optimizer = make_optimizer(model, OptimizerSettings.from_config(cfg))
    adversary = None
    if cfg.ADVERSARIAL:
        discriminator = build_discriminator(cfg.DISCRIMINATOR, cfg.N_CLASSES).to(runtime.device)
        adversary = Adversary(discriminator, torch.optim.Adam(discriminator.parameters(),
                                                              lr=cfg.DISCRIMINATOR_LEARNING_RATE,
                                                              betas=tuple(cfg.ADAM_BETAS)), cfg.ADVERSARIAL_WEIGHT,
                              cfg.DISCRIMINATOR_L2_WEIGHT, cfg.ADVERSARIAL_STEP)
    state = TrainingState(model_args, model, optimizer, adversary)
    if init_state is not None:  # (initial_weights); deep supervision's heads start fresh when it holds none
        missing, unexpected = model.load_state_dict(init_state, strict=False)
        if unexpected or any(not key.startswith(HEADS_PREFIX) for key in missing):
            raise ConfigError(f"--init-from: the weights do not fit the network; missing {missing}, unexpected "
                              f"{unexpected}")
    if cfg.EMA_DECAY > 0:
        state.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.EMA_DECAY), use_buffers=True)
    if checkpoint:
        # a run with a moving average saved it as the model and its trained weights beside it
        model.load_state_dict(checkpoint.get("trained_model_state") or checkpoint["model_state"])
        if state.average is not None:
            state.average.module.load_state_dict(checkpoint["model_state"])
            state.average.n_averaged.fill_(1)  # an average under way: the next step blends in, not copies over
        optimizer.load_state_dict(checkpoint["optimizer_state"])
        if adversary and checkpoint.get("discriminator_state"):
            adversary.discriminator.load_state_dict(checkpoint["discriminator_state"])
            adversary.optimizer.load_state_dict(checkpoint["discriminator_optimizer_state"])
        state.epoch, state.best_score = checkpoint["epoch"], checkpoint.get("best_score", -math.inf)
    return state


def epoch_summary(epoch: int, train_loss: float, metrics: dict[str, float], seconds: float, fluids,
                  improved: bool) -> str:
    """One console line per epoch."""
    line = f"epoch {epoch}: train loss {train_loss:.4f}"
    if metrics:
        dice = " ".join(f"{name} {metrics[f'dice_{name}']:.3f}" for name in fluids)
        line += f", val loss {metrics['val_loss']:.4f}, Dice {dice} mean {metrics['dice_mean_fluid']:.3f}"
    return line + f" ({seconds:.0f} s){' *' if improved else ''}"


def fit(state: TrainingState, train_records: list[SliceRecord], val_records: list[SliceRecord], work_dir: Path,
        run_dir: Path, cfg, runtime: Runtime, reference: dict | None, workers: int) -> None:
    """Trains epochs ``state.epoch + 1 .. EPOCHS`` (or until the time budget runs out), logging and saving
    ``last.pt`` after each and ``best.pt`` when validation improves."""
    network = DistributedDataParallel(state.model, device_ids=[runtime.local_rank] if runtime.device.type == "cuda"
                                      else None) if runtime.distributed else state.model
    loss_fn = make_loss(LossSettings.from_config(cfg))
    penalty_of = weight_penalty(cfg.MODEL, cfg.L2_WEIGHT)  # the network's L2 on its kernels (rmit_unet), or 0
    regulariser = lambda: penalty_of(state.model)  # noqa: E731
    data = TrainingDataSettings.from_config(cfg)
    endless = cfg.BATCHES_PER_EPOCH > 0
    # endless: N batches an epoch from one endless stream; else each epoch one stratified, augmented pass (the
    # original's epoch), each rank its share of the B-scans
    loader = training_loader(train_records if endless else train_records[runtime.rank::runtime.world_size],
                             work_dir, data, cfg.SEED, runtime.rank, state.epoch, workers, endless)
    batches = iter(loader) if endless else loader  # one pass: each epoch iterates the loader again
    fixed_val_batches = validation_batches(val_records, work_dir, data, seed=cfg.SEED) \
        if val_records and not cfg.VAL_FRESH_PATCHES else None
    # BN_REESTIMATE_BATCHES: an endless stream of its own (another seed), so the training batches stay as they are
    bn_batches = training_batches(train_records[runtime.rank::runtime.world_size], work_dir, data,
                                  seed=cfg.SEED + BN_STREAM_SEED_OFFSET + state.epoch) \
        if cfg.BN_REESTIMATE_BATCHES > 0 else None
    deadline = time.perf_counter() + 60 * cfg.TRAIN_BUDGET_MINUTES if cfg.TRAIN_BUDGET_MINUTES > 0 else None
    schedule = LearningRateSchedule(state.optimizer, cfg.LR_SCHEDULE, cfg.LEARNING_RATE, cfg.EPOCHS,
                                    cfg.TRAIN_BUDGET_MINUTES, runtime, cycles=cfg.SNAPSHOT_CYCLES)
    warned_empty_validation = False
    for epoch in range(state.epoch + 1, cfg.EPOCHS + 1):
        timer = EpochTimer()
        schedule.epoch = epoch
        train_loss = train_epoch(network, batches, state.optimizer, loss_fn, runtime, state.adversary,
                                 description=f"epoch {epoch}/{cfg.EPOCHS}", regulariser=regulariser,
                                 n_batches=cfg.BATCHES_PER_EPOCH if endless else None, deadline=deadline,
                                 before_step=schedule.step,
                                 after_step=(lambda: state.average.update_parameters(state.model))
                                 if state.average is not None else (lambda: None))
        kept = state.kept_model
        if not all(bool(torch.isfinite(tensor).all()) for tensor in kept.state_dict().values()
                   if tensor.is_floating_point()):
            raise ValueError(f"{run_dir}: training diverged in epoch {epoch} (train loss {train_loss:.4g}): the "
                             f"weights hold NaN or infinite values, so this epoch is not saved; lower "
                             f"LEARNING_RATE, or --resume from the last saved epoch")
        if cfg.BN_REESTIMATE_BATCHES > 0:
            reestimate_batch_norms(kept, bn_batches, cfg.BN_REESTIMATE_BATCHES, runtime)
        metrics = {}
        if val_records:
            val_batches = fixed_val_batches if fixed_val_batches is not None else validation_batches(
                val_records, work_dir, data, seed=cfg.SEED, epoch=epoch)
            with torch.no_grad():
                penalty = float(penalty_of(kept)) if cfg.VAL_LOSS_WITH_L2 else 0.0
            if state.average is None:  # the ranks validate with rank 0's running statistics, as DDP's forward had
                broadcast_buffers(kept, runtime)
            metrics = validate(kept, val_batches, loss_fn, runtime, cfg.N_CLASSES, cfg.FLUIDS, penalty,
                               cfg.IGNORE_LABEL)
            if math.isnan(metrics["val_loss"]):  # not one full validation batch: as without validation cases
                if not warned_empty_validation:
                    log.info(f"note: the validation cases gave no full batch of {cfg.BATCH_SIZE} patches; "
                             f"{cfg.BEST_CHECKPOINT} is the last epoch (lower BATCH_SIZE or raise VAL_BSCANS)")
                warned_empty_validation, metrics = True, {}
        row = {"epoch": epoch, "train_loss": train_loss, **metrics, "seconds": round(timer.seconds, 1)}
        validated = bool(metrics)
        score = score_of(metrics, cfg.BEST_BY) if validated else math.inf
        improved = score > state.best_score or not validated or epoch == 1
        state.best_score, state.epoch = max(state.best_score, score), epoch
        log.info(epoch_summary(epoch, train_loss, metrics, timer.seconds, cfg.FLUIDS, improved and validated))
        if runtime.is_main:
            plot_curves(append_log(run_dir, row), run_dir / CURVES_PNG, loss_name=loss_fn.name)
            adversary = state.adversary
            checkpoint = make_checkpoint(state.model_args, kept, state.optimizer, epoch, config_to_dict(cfg),
                                         row, state.best_score, reference,
                                         adversary.discriminator if adversary else None,
                                         adversary.optimizer if adversary else None)
            if state.average is not None:
                checkpoint["trained_model_state"] = {k: v.cpu() for k, v in state.model.state_dict().items()}
            if improved:
                save_checkpoint(run_dir / cfg.BEST_CHECKPOINT, checkpoint)
            save_checkpoint(run_dir / cfg.LAST_CHECKPOINT, checkpoint)
            if cfg.SNAPSHOT_CYCLES > 1 and epoch % schedule.cycle_epochs == 0:  # a cycle's end: its snapshot
                save_checkpoint(run_dir / snapshot_name(cfg, epoch // schedule.cycle_epochs), checkpoint)
        # the ranks agree, as within an epoch: one rank's clock past the deadline stops them all
        if deadline is not None and epoch < cfg.EPOCHS and not all_ranks_go(time.perf_counter() < deadline, runtime):
            log.info(f"time budget of {cfg.TRAIN_BUDGET_MINUTES:g} min reached in epoch {epoch} (validated and saved)")
            break


def snapshot_name(cfg, cycle: int) -> str:
    """The file name of cycle ``cycle``'s snapshot (1-based; ``SNAPSHOT_CHECKPOINT``)."""
    return cfg.SNAPSHOT_CHECKPOINT.format(cycle=cycle)


def run_training(args: TrainingRequest) -> Path:
    """Trains as ``args`` says (train.py's command line, or :func:`train_model`'s arguments); returns the run
    folder.

    Raises:
        ConfigError: bad settings, or a run folder that holds a run without ``resume``.
        OSError, ValueError: unusable prepared data, an unwritable or full run folder, a diverged training.
    """
    cfg, run_dir, checkpoint = resolve_run(args)
    check_training_settings(cfg, checkpoint)
    model_args = unet_arguments(NetworkSettings.from_config(cfg))
    init_state = initial_weights(args.init_from, model_args, cfg.PATCH_SHAPE) if args.init_from else None
    work_dir = Path(cfg.WORK_DIR)
    check_outputs([("--run-dir", run_dir or layout.run_dir(cfg.WORK_DIR, "", cfg.RUNS_SUBDIR))],
                  [("data root", cfg.DATA_ROOT), ("prepared slices folder", work_dir / cfg.SLICES_SUBDIR)])
    train_records, val_records = read_records(work_dir, cfg)
    runtime = training_runtime(select_runtime(RuntimeSettings.from_config(cfg)),
                               MODELS[cfg.MODEL].trains_faster_nchw_on_avx2)
    run_dir = open_run_dir(run_dir, cfg, runtime)
    with contextlib.ExitStack() as held:
        if runtime.is_main:  # one run at a time in a run folder: a second is refused, naming the first
            held.enter_context(run_lock(run_dir / RUN_LOCK, "train.py", "--run-dir"))
            if checkpoint is None and (run_dir / cfg.LAST_CHECKPOINT).exists():  # another run saved it meanwhile
                raise run_exists(run_dir, cfg)
            removed = remove_stale_temporaries(run_dir, recursive=False)
            if removed:
                log.info(f"note: removed {len(removed)} temporary file(s) an interrupted run left in {run_dir}")
        seed_everything(cfg.SEED + runtime.rank)
        workers = loader_workers(cfg.LOADER_WORKERS, runtime.device.type, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if runtime.device.type == "cpu" and workers > 0:
            held.callback(torch.set_num_threads, torch.get_num_threads())  # as it was, after the run
            torch.set_num_threads(max(1, torch.get_num_threads() - workers))  # leave the workers their cores
        if not val_records:
            log.info(f"note: the split has no val cases; no validation, and {cfg.BEST_CHECKPOINT} is the last epoch")
        state = build_training(cfg, model_args, runtime, checkpoint, init_state)
        if checkpoint:
            log.info(f"resuming {run_dir} after epoch {state.epoch}")
        if init_state is not None:
            log.info(f"network weights from {args.init_from}")
        if runtime.is_main:
            save_config(cfg, run_dir / cfg.CONFIG_JSON)
        log.info(f"{len(train_records)} training and {len(val_records)} validation B-scans; "
                 f"{network_label(state.model_args)} on {runtime.device} ({runtime.autocast_dtype or 'fp32'}, "
                 f"{runtime.layout}, {runtime.world_size} process(es)); run folder {run_dir}")
        if runtime.note:
            log.info(f"note: {runtime.note}")
        fit(state, train_records, val_records, work_dir, run_dir, cfg, runtime,
            histogram_reference(work_dir, cfg, checkpoint), workers)
    if runtime.distributed:
        dist.barrier()
    return run_dir
