"""A full-resolution skip for smp's U-Net (``FULL_RESOLUTION_CHANNELS``, beyond the method; nnU-Net's and the
authors' U-Nets have one): two 3x3 convolutions on the input itself, whose features join the last decoder block.

smp's ResNet encoders halve the input in their first convolution, so its U-Net's finest skip is at half resolution
and the last decoder block only upsamples: a pocket's outline at full resolution is drawn from features that never
saw the pixels beside it. :class:`FullResolutionUnet` gives that block the input's own edges, as the plain U-Nets of
nnU-Net and of the authors (whose first level works at full resolution) do.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.base.modules import Conv2dReLU
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock
from torch import nn


class FullResolutionUnet(smp.Unet):
    """``smp.Unet(**arguments)`` whose last decoder block also takes ``full_resolution_channels`` features made from
    the input at full resolution, concatenated with its upsampled input as the other blocks concatenate their skips.
    ``stem``: two of smp's ``Conv2dReLU`` (padded 3x3 convolution, batch norm, ReLU), each an ``nn.Sequential`` that
    :func:`utils.model.networks.fold_batch_norms` folds at inference.

    Forward: ``(N, C_in, H, W)`` float in [-1, 1) (H, W multiples of 32) -> ``(N, classes, H, W)`` logits, as
    ``smp.Unet``. With 16 channels it trained 10-15% slower per epoch than ``smp.Unet`` on 512 x 256 strips
    (docs/quality.md).
    """

    def __init__(self, full_resolution_channels: int, **arguments: Any):
        super().__init__(**arguments)
        if full_resolution_channels < 1:
            raise ValueError(f"full_resolution_channels must be >= 1, got {full_resolution_channels}")
        in_channels = self.encoder.out_channels[0]
        self.stem = nn.Sequential(
            Conv2dReLU(in_channels, full_resolution_channels, kernel_size=3, padding=1),
            Conv2dReLU(full_resolution_channels, full_resolution_channels, kernel_size=3, padding=1))
        last = self.decoder.blocks[-1]
        self.decoder.blocks[-1] = UnetDecoderBlock(
            last.conv1[0].in_channels, full_resolution_channels, last.conv2[0].out_channels,
            attention_type=arguments.get("decoder_attention_type"), interpolation_mode=last.interpolation_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.jit.is_scripting() or torch.jit.is_tracing()):
            self.check_input_shape(x)
        features = self.encoder(x)  # [x itself, 1/2, 1/4, ..., 1/32 of the input]
        skips = [self.stem(x), *features[1:-1]][::-1]  # the stem's features in place of the input, coarsest first
        decoded = self.decoder.center(features[-1])
        for block, skip in zip(self.decoder.blocks, skips):
            decoded = block(decoded, skip.shape[-2], skip.shape[-1], skip_connection=skip)
        return self.segmentation_head(decoded)
