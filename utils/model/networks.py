"""The segmentation networks and the adversarial discriminator, built from plain constructor arguments (which
checkpoints store, so prediction rebuilds the network without config.py)."""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn


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



