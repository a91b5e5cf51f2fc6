"""The segmentation network (smp U-Net), the adversarial discriminator, and checkpoints.

A checkpoint is a plain dict that loads with ``torch.load(weights_only=True)`` and holds everything needed to
rebuild and use the model without config.py: the U-Net's constructor arguments, the effective config, the epoch,
the optimiser state(s), the epoch's metrics and the histogram-matching reference of the preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from utils.files import atomic_path


def unet_arguments(cfg) -> dict[str, Any]:
    """Constructor arguments of the U-Net described by the config (3 input channels: a B-scan and neighbours)."""
    return {"encoder_name": cfg.ENCODER, "encoder_weights": cfg.ENCODER_WEIGHTS or None, "in_channels": 3,
            "classes": cfg.N_CLASSES}


def build_unet(model_args: dict[str, Any]) -> nn.Module:
    """``smp.Unet(**model_args)``; weights are never downloaded unless ``encoder_weights`` names some.

    The network maps ``(N, 3, H, W)`` float images in [-1, 1] (H, W multiples of 32) to ``(N, C, H, W)`` logits.
    """
    return smp.Unet(**model_args)


class Discriminator(nn.Module):
    """The method's adversarial critic: tells (image, reference one-hot) pairs from (image, softmax) pairs.

    Input: image ``(N, 3, H, W)`` in [-1, 1] and segmentation ``(N, C, H, W)`` with values in [0, 1] (one-hot or
    class probabilities); output ``(N,)`` logits, high for "reference". Strided convolutions with leaky ReLU, then
    a global average, so any patch size works.
    """

    def __init__(self, n_classes: int, in_channels: int = 3, width: int = 32, depth: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels + n_classes
        for level in range(depth):
            out_channels = width * 2 ** level
            layers += [nn.Conv2d(channels, out_channels, kernel_size=4, stride=2, padding=1),
                       nn.BatchNorm2d(out_channels) if level else nn.Identity(),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = out_channels
        layers.append(nn.Conv2d(channels, 1, kernel_size=3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, segmentation: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([image, segmentation], dim=1)).mean(dim=(1, 2, 3))


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Writes ``checkpoint`` with ``torch.save``, atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


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
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise ValueError(f"{path}: cannot load the checkpoint ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(checkpoint, dict) or "model_args" not in checkpoint or "model_state" not in checkpoint:
        raise ValueError(f"{path}: not a retouch checkpoint (expected a dict with model_args and model_state)")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any]) -> nn.Module:
    """The U-Net of a checkpoint, with its weights, in eval mode."""
    model = build_unet(checkpoint["model_args"])
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()
