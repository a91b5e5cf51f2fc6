"""Checkpoints: what a training run saves and what prediction rebuilds the model from.

A checkpoint is a plain dict that loads with ``torch.load(weights_only=True)`` and holds everything needed to
rebuild and use the model without config.py: the network's constructor arguments, the effective config, the
epoch, the optimiser state(s), the epoch's metrics and the histogram-matching reference of the preprocessing.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from utils.io.files import atomic_path
from utils.model.networks import build_unet
from utils.prepare.preprocessing import N_LEVELS

# The settings that turn a volume into a trained network's input and its output into labels: a checkpoint's, never
# changed after training (train.py --resume keeps them; the members of an ensemble must agree on them).
MODEL_INPUT_SETTINGS = ("VENDORS", "N_CLASSES", "BACKGROUND", "FLUIDS", "HISTOGRAM_MATCH_VENDORS",
                        "HISTOGRAM_ROUNDING", "MEDIAN_VENDORS", "MEDIAN_SLICES_VENDORS", "MEDIAN_SLICES",
                        "MEDIAN_INPLANE", "PATCH_SHAPE", "SPECTRALIS_AXIAL_SPACING_MM", "DEPTH_SCALE",
                        "IMAGE_RESAMPLING", "INPUT_CHANNELS", "ENTROPY_DISK_RADIUS", "ENTROPY_THRESHOLD",
                        "CLOSING_DISK_RADIUS")


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Writes ``checkpoint`` with ``torch.save``, atomically (temp file + rename)."""
    try:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
    except RuntimeError as error:  # torch's writer reports a full disk or a failed write as RuntimeError
        detail = str(error).splitlines()[0] if str(error) else "the write failed"
        raise OSError(f"{path}: cannot write the checkpoint ({detail}); is the disk full?") from None


def make_checkpoint(model_args: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                    config: dict[str, Any], metrics: dict[str, float], best_score: float,
                    histogram_reference: dict | None, discriminator: nn.Module | None = None,
                    discriminator_optimizer: torch.optim.Optimizer | None = None) -> dict[str, Any]:
    """The checkpoint dict of a training state (tensors on the CPU), as :func:`load_checkpoint` expects it.

    Args:
        model_args: the network's constructor arguments (:func:`utils.model.networks.unet_arguments`).
        model: the network (not DDP-wrapped).
        optimizer: its optimiser.
        epoch: epochs completed, >= 1.
        config: the effective settings (``config_to_dict``).
        metrics: this epoch's log row.
        best_score: the best validation score so far (what picks ``best.pt``).
        histogram_reference: the preprocessing's histogram reference (None when there was none).
        discriminator, discriminator_optimizer: the adversarial part, when trained.
    """
    checkpoint = {"model_args": model_args, "model_state": {k: v.cpu() for k, v in model.state_dict().items()},
                  "optimizer_state": optimizer.state_dict(), "epoch": epoch, "config": config,
                  "metrics": {k: float(v) for k, v in metrics.items()}, "best_score": best_score,
                  "histogram_reference": histogram_reference}
    if discriminator is not None:
        checkpoint["discriminator_state"] = discriminator.state_dict()
        checkpoint["discriminator_optimizer_state"] = discriminator_optimizer.state_dict()
    return checkpoint


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (no code is unpickled).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a retouch checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with warnings.catch_warnings():  # torch warns in several lines about foreign pickle protocols
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        # torch's own message for a file its safe unpickler refuses advises weights_only=False, which would run
        # whatever code the file holds: never pass that on.
        detail = str(error).splitlines()[0] if str(error) else ""
        if isinstance(error, pickle.UnpicklingError) or "weights_only" in detail.lower():
            detail = ("it is damaged, not a PyTorch file, or holds Python objects other than tensors and plain "
                      "data, which are never loaded because they could run code")
        raise ValueError(f"{path}: cannot load the checkpoint ({type(error).__name__}: {detail}); expected a "
                         f"checkpoint written by train.py") from None
    if not isinstance(checkpoint, dict) or "model_args" not in checkpoint or "model_state" not in checkpoint:
        raise ValueError(f"{path}: not a retouch checkpoint (expected a dict with model_args and model_state)")
    problem = checkpoint_problem(checkpoint)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return checkpoint


def checkpoint_problem(checkpoint: dict[str, Any]) -> str:
    """What makes a loaded checkpoint dict unusable, or "" when nothing does.

    Checks the fields the scripts read: ``model_args`` and ``config`` dicts, ``model_state`` a dict of tensors, all
    finite (a diverged run's NaN weights would segment nothing and look like success), and a histogram reference of
    None or ``{"path": str, "counts": 256 finite counts >= 0, ...}``.
    """
    if not isinstance(checkpoint["model_args"], dict):
        return f"model_args is a {type(checkpoint['model_args']).__name__}; expected a dict"
    if not isinstance(checkpoint.get("config", {}), dict):
        return f"config is a {type(checkpoint['config']).__name__}; expected a dict of settings"
    state = checkpoint["model_state"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        return "model_state is not a dict of tensors; expected the network's state_dict"
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weight {name} holds NaN or infinite values (a training run that diverged); expected finite weights"
    reference = checkpoint.get("histogram_reference")
    if reference is not None:
        counts = reference.get("counts") if isinstance(reference, dict) else None
        try:
            counts = np.asarray(counts, dtype=np.float64)
        except (TypeError, ValueError):
            counts = np.zeros(0)
        if (not isinstance(reference, dict) or not isinstance(reference.get("path", ""), str)
                or counts.shape != (N_LEVELS,) or not np.isfinite(counts).all() or (counts < 0).any()):
            return (f"histogram_reference is not a histogram reference; expected None or a dict with a path and "
                    f"{N_LEVELS} counts >= 0")
    return ""


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """The network of a checkpoint, with its weights, in eval mode.

    Raises:
        ValueError: the arguments name no network this code builds, or the weights do not fit it (another
            architecture or class count); the message says which.
    """
    try:
        model = build_unet(checkpoint["model_args"])
        model.load_state_dict(checkpoint["model_state"])
    except (TypeError, ValueError, KeyError) as error:
        raise ValueError(f"the checkpoint's network cannot be built ({str(error).splitlines()[0]})") from None
    except RuntimeError as error:  # load_state_dict: missing, unexpected or differently shaped weights
        first = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))
        raise ValueError(f"the checkpoint's weights do not fit its network ({first[:200]})") from None
    return model.eval()


def latest_checkpoint(runs_dir: Path, name: str, hint: str = "") -> Path:
    """The checkpoint ``name`` (best.pt, last.pt) written most recently under ``runs_dir/<run>/``.

    Raises:
        FileNotFoundError: there is none; the message ends with ``hint``.
    """
    checkpoints = sorted(Path(runs_dir).glob(f"*/{name}"), key=lambda path: path.stat().st_mtime)
    if not checkpoints:
        raise FileNotFoundError(f"{runs_dir}: no run with a {name}{hint}")
    return checkpoints[-1]
