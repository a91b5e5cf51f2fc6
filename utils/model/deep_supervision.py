"""Deep supervision (``DEEP_SUPERVISION``, beyond the method; nnU-Net's default): smp's U-Net with a 1x1 head on
three of its decoder blocks, each trained on the targets at its resolution beside the network's own output.

:class:`DeepSupervisedUnet` is ``smp.Unet`` plus the heads: in training mode its forward returns
:class:`DeepOutputs` (the full-resolution logits and the auxiliary ones, finest first); in eval mode the
full-resolution logits alone, so validation and inference see the same network as without it (the heads' weights are
saved with the rest and unused there). :func:`deep_supervision_loss` weighs the losses as nnU-Net does: each
coarser output half the weight of the one above, the weights summing to 1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

# The decoder blocks whose outputs get a head, finest first: of smp's five, those at 1/2, 1/4 and 1/8 of the input
# (nnU-Net supervises every resolution but the two coarsest)
SUPERVISED_BLOCKS = (3, 2, 1)
# The heads' weights in a state dict: ``auxiliary_heads.<i>.weight``, ``.bias``
HEADS_PREFIX = "auxiliary_heads."


class DeepOutputs(NamedTuple):
    """A :class:`DeepSupervisedUnet`'s training output.

    Fields:
        main: ``(N, C, H, W)`` logits, the network's own output.
        auxiliary: ``(N, C, H / 2**k, W / 2**k)`` logits for k = 1, 2, 3 (finest first).
    """

    main: torch.Tensor
    auxiliary: tuple[torch.Tensor, ...]


class DeepSupervisedUnet(smp.Unet):
    """``smp.Unet(**arguments)`` with a 1x1 convolution to ``classes`` logits on each decoder block of
    :data:`SUPERVISED_BLOCKS` (``decoder_channels`` gives their widths; smp's default when not given).

    Forward: ``(N, 3, H, W)`` float in [-1, 1) (H, W multiples of 32) -> in training mode :class:`DeepOutputs`, in
    eval mode ``(N, classes, H, W)`` logits.
    """

    def __init__(self, **arguments: Any):
        super().__init__(**arguments)
        widths = [block.conv2[0].out_channels for block in self.decoder.blocks]
        classes = self.segmentation_head[0].out_channels
        self.auxiliary_heads = nn.ModuleList(nn.Conv2d(widths[index], classes, kernel_size=1)
                                             for index in SUPERVISED_BLOCKS)
        for index in SUPERVISED_BLOCKS:
            self.decoder.blocks[index].register_forward_hook(_keep_training_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor | DeepOutputs:
        blocks = [self.decoder.blocks[index] for index in SUPERVISED_BLOCKS]
        try:
            main = super().forward(x)
            if not self.training:
                return main
            return DeepOutputs(main, tuple(head(block.supervised_output)
                                           for head, block in zip(self.auxiliary_heads, blocks)))
        finally:
            for block in blocks:  # no activation outlives the call
                block.supervised_output = None


def _keep_training_output(block: nn.Module, inputs: Any, output: torch.Tensor) -> None:
    """A supervised decoder block's forward hook: its output, kept on the block for the head during training. A
    module-level function (it holds no model), so a copy of the network (``copy.deepcopy``: a moving average of the
    weights) keeps its own outputs."""
    block.supervised_output = output if block.training else None


def without_heads(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict of :class:`DeepSupervisedUnet` without its heads' weights: the plain ``smp.Unet``'s."""
    return {key: value for key, value in state.items() if not key.startswith(HEADS_PREFIX)}


def deep_supervision_weights(n_auxiliary: int) -> list[float]:
    """nnU-Net's weights of the full-resolution loss and ``n_auxiliary`` coarser ones: 1, 1/2, 1/4, ... normalised to
    sum to 1."""
    raw = [0.5 ** level for level in range(n_auxiliary + 1)]
    return [weight / sum(raw) for weight in raw]


def deep_supervision_loss(main_loss: torch.Tensor, auxiliary: tuple[torch.Tensor, ...], masks: torch.Tensor,
                          loss_fn: nn.Module) -> torch.Tensor:
    """The weighted sum of ``main_loss`` (the loss of the full-resolution logits) and ``loss_fn`` of each auxiliary
    output against the targets resized to it by nearest neighbour, each pixel's from the middle of its block (a code
    stays a code, ``IGNORE_LABEL`` included).

    Args:
        main_loss: 0-d float32 tensor.
        auxiliary: :attr:`DeepOutputs.auxiliary`, finest first.
        masks: ``(N, H, W)`` int64 class codes of the full-resolution logits.
        loss_fn: the segmentation loss, ``(logits (N, C, h, w) float32, targets (N, h, w) int64) -> 0-d``.
    """
    weights = deep_supervision_weights(len(auxiliary))
    total = weights[0] * main_loss
    for weight, logits in zip(weights[1:], auxiliary):
        targets = F.interpolate(masks[:, None].float(), size=logits.shape[-2:], mode="nearest-exact")[:, 0].long()
        total = total + weight * loss_fn(logits.float(), targets)
    return total
