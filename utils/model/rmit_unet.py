"""The authors' own networks, ported from Keras: the unpadded U-Net with a multi-scale output that segments
B-scan patches, and the discriminator of their adversarial training.

Source: RuwanT/retouch, ``custom_networks.py``, functions ``retouch_unet`` and ``retouch_discriminator``, as
stored at commit 7f7797ab (the version with the multi-scale output, the L2 kernel regulariser and the
128/256/512 discriminator with a 2-way softmax; earlier versions of the file lack all three).

Geometry. Every 3x3 convolution is unpadded ('valid'), so the segmenter's output is smaller than its input:
a ``(256, 128)`` patch (the original's ``PATCH_SIZE_H, PATCH_SIZE_W``) gives a ``(164, 36)`` map, 46 rows and
columns short on each side (the original's ``BORDER_WIDTH = 46``). In general the output is the input minus
``2 * MARGIN`` for every input the original network accepts: sides that are multiples of 8 and at least 96.
Only those sizes fit the original's fixed ``Cropping2D`` amounts ((5, 4), (17, 17), (42, 42) on the skips and
14, 6, 2 on the multi-scale maps); :func:`valid_input` tells them apart and :func:`input_shape_for` gives the
smallest one whose output covers a wanted size (pad B-scans to it at inference).

Tensors are channels-first here: ``(N, C, H, W)`` with ``H`` = rows (depth) and ``W`` = columns (A-scans);
the original is channels-last.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from utils.model.input_scale import check_patch_shape

MARGIN = 46  # rows (and columns) the segmenter loses on each side; the original's BORDER_WIDTH
INPUT_MULTIPLE = 8  # input sides the original's fixed crops fit: multiples of 8 ...
MIN_INPUT_SIDE = 96  # ... from 96 up (a 4-pixel output)
L2_WEIGHT = 1e-4  # the original's regularize_weight: Keras kernel_regularizer=l2(1e-4)

# Keras BatchNormalization defaults (momentum 0.99 of the old running value, epsilon 1e-3); PyTorch's momentum
# is the weight of the new batch.
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


# ----------------------------------------------------------------------------------------------------------------
# Shape arithmetic
# ----------------------------------------------------------------------------------------------------------------
def _valid_side(n: int) -> bool:
    return n % INPUT_MULTIPLE == 0 and n >= MIN_INPUT_SIDE


def valid_input(shape: Sequence[int]) -> bool:
    """Whether the original network accepts an input of this ``(height, width)``.

    The original crops its skip connections by fixed amounts, which fit exactly the sides that are multiples of
    8, and needs at least 96 pixels for a non-empty output. Note that pooling does not divide evenly at every
    level even then: the third max-pooling of a 256-row patch floors 57 rows to 28, as in the original.

    Args:
        shape: ``(height, width)`` of the input in pixels.

    Returns:
        True when both sides are multiples of 8 and at least 96; False otherwise (also for malformed shapes).
    """
    try:
        h, w = check_patch_shape(shape, "shape")
    except ValueError:
        return False
    return _valid_side(h) and _valid_side(w)


def input_shape_for(output_shape: Sequence[int]) -> tuple[int, int]:
    """The smallest valid input whose output covers ``output_shape``.

    At inference, pad a B-scan of shape ``(H, W)`` to ``input_shape_for((H, W))`` with ``MARGIN`` rows and columns
    before it (the output's first pixel sits ``MARGIN`` rows and columns into the input) and crop the output back
    to ``(H, W)``.

    Args:
        output_shape: wanted ``(height, width)`` of the output in pixels, both >= 1.

    Returns:
        ``(height, width)`` of the input, each side a multiple of 8, at least 96 and at least the wanted size
        plus ``2 * MARGIN``.

    Raises:
        ValueError: a malformed ``output_shape``.
    """
    sides = check_patch_shape(output_shape, "output_shape")

    def side(n: int) -> int:
        needed = n + 2 * MARGIN
        return max(MIN_INPUT_SIDE, -(-needed // INPUT_MULTIPLE) * INPUT_MULTIPLE)

    return side(sides[0]), side(sides[1])


def _centre_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``(height, width)`` of ``x`` ``(N, C, H, W)``; an odd surplus loses its extra row/column at
    the top/left, as the original's ``Cropping2D(((5, 4), (5, 4)))`` does on the third skip."""
    top = (x.shape[-2] - height + 1) // 2
    left = (x.shape[-1] - width + 1) // 2
    return x[..., top:top + height, left:left + width]


def _source_blocks(factor: int, top: int, left: int, height: int, width: int) -> tuple[slice, slice]:
    """The rows and columns of a map whose ``factor x factor`` blocks, once nearest-upsampled, hold the window
    of rows ``top:top + height`` and columns ``left:left + width``."""
    return (slice(top // factor, (top + height - 1) // factor + 1),
            slice(left // factor, (left + width - 1) // factor + 1))


def _upsampled_window(x: torch.Tensor, factor: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
    """Rows ``top:top + height`` and columns ``left:left + width`` of ``x`` ``(N, C, H, W)`` nearest-upsampled by
    ``factor``, upsampling only the rows and columns of ``x`` that the window holds."""
    rows, columns = _source_blocks(factor, top, left, height, width)
    upsampled = F.interpolate(x[..., rows, columns], scale_factor=factor, mode="nearest")
    top, left = top - rows.start * factor, left - columns.start * factor
    return upsampled[..., top:top + height, left:left + width]


def _centre_offsets(x: torch.Tensor, factor: int, height: int, width: int) -> tuple[int, int]:
    """Top and left of the central ``(height, width)`` of ``x`` upsampled by ``factor`` (as :func:`_centre_crop`)."""
    return (x.shape[-2] * factor - height + 1) // 2, (x.shape[-1] * factor - width + 1) // 2


def _phase_taps(factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which source pixels a 3x3 conv over a map nearest-upsampled by ``factor`` reads, by output phase.

    The phase of output row ``i`` is ``i % factor``. At phase ``p`` tap ``d`` (0..2, offset ``d - 1``) reads source
    offset ``(p + d - 1) // factor``: phase 0 reads the source row above with its first tap, phase ``factor - 1``
    the row below with its last, the phases between only their own row. Phases that read alike share a type.

    Returns:
        ``(taps, types)``: ``(T, 3, 3)`` 0/1 matrices ``taps[t, e, d]`` (tap ``d`` reads source offset ``e - 1`` at
        phase type ``t``; T is 3, or 2 for ``factor`` 2) and the ``(factor,)`` int64 type of each phase.
    """
    per_phase = torch.zeros(factor, 3, 3)
    for phase in range(factor):
        for d in range(3):
            per_phase[phase, (phase + d - 1) // factor + 1, d] = 1.0
    return torch.unique(per_phase, dim=0, return_inverse=True)


def _exact_upsampled_conv(x: torch.Tensor, factor: int, weight: torch.Tensor, top: int, left: int, height: int,
                          width: int, rows: tuple[int, int], columns: tuple[int, int]) -> torch.Tensor:
    """Rows ``rows[0]:rows[1]`` and columns ``columns[0]:columns[1]`` of
    ``conv2d(_upsampled_window(x, factor, top, left, height, width), weight, padding=1)``, upsampling only the
    window's pixels that they read."""
    (r0, r1), (c0, c1) = rows, columns
    lo_r, hi_r, lo_c, hi_c = max(r0 - 1, 0), min(r1 + 1, height), max(c0 - 1, 0), min(c1 + 1, width)
    window = _upsampled_window(x, factor, top + lo_r, left + lo_c, hi_r - lo_r, hi_c - lo_c)
    # zero padding on every side, used only where the window is the crop's edge (F.pad would lose channels_last)
    return F.conv2d(window, weight, padding=1)[..., r0 - lo_r:r1 - lo_r, c0 - lo_c:c1 - lo_c]


def _upsampled_conv(x: torch.Tensor, factor: int, weight: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``conv2d(_centre_crop(F.interpolate(x, scale_factor=factor), height, width), weight, padding=1)`` (a 3x3 conv
    of the central ``(height, width)`` of ``x`` nearest-upsampled by ``factor``), computed at ``x``'s resolution.

    A 3x3 conv over a nearest-upsampled map reads, at each output pixel, the source pixels around it with taps
    that depend only on the pixel's phase (its position within its ``factor x factor`` block): one 3x3 conv of
    ``x`` with the taps summed per phase type (:func:`_phase_taps`) gives every phase at once, ``factor ** 2``
    times fewer pixels than the upsampled map. The crop's border ring, where the upsampled conv reads the zero
    padding instead of its neighbours, is computed directly. Equal up to rounding; gradients too.

    Args:
        x: ``(N, C, h, w)`` source map.
        factor: upsampling factor, >= 2.
        weight: ``(O, C, 3, 3)`` kernels (no bias).
        height, width: size of the centre crop of the upsampled map (>= 1).

    Returns:
        ``(N, O, height, width)``, dtype of the conv.
    """
    top, left = _centre_offsets(x, factor, height, width)
    if height < 3 or width < 3:  # no interior
        return _exact_upsampled_conv(x, factor, weight, top, left, height, width, (0, height), (0, width))
    taps, types = _phase_taps(factor)
    taps, types, n_types = taps.to(weight.device, weight.dtype), types.to(weight.device), len(taps)
    # (T, T, O, C, 3, 3): per (row type, column type), the source taps as sums of the upsampled conv's taps
    phased = torch.einsum("aed,bfg,ocdg->abocef", taps, taps, weight)
    rows, columns = _source_blocks(factor, top, left, height, width)
    source = x[..., rows, columns]
    scores = F.conv2d(source, phased.reshape(-1, *weight.shape[1:]), padding=1)
    n, (h, w) = scores.shape[0], scores.shape[-2:]
    scores = scores.reshape(n, n_types, n_types, weight.shape[0], h, w)
    # (N, factor, factor, O, h, w) -> (N, O, h, factor, w, factor) -> the upsampled map of the crop's source blocks
    scores = scores.index_select(1, types).index_select(2, types)
    upsampled = scores.permute(0, 3, 4, 1, 5, 2).reshape(n, weight.shape[0], h * factor, w * factor)
    r, c = top - rows.start * factor, left - columns.start * factor
    interior = upsampled[..., r + 1:r + height - 1, c + 1:c + width - 1]

    def exact(row_range: tuple[int, int], column_range: tuple[int, int]) -> torch.Tensor:
        return _exact_upsampled_conv(x, factor, weight, top, left, height, width, row_range, column_range)

    middle = torch.cat([exact((1, height - 1), (0, 1)), interior, exact((1, height - 1), (width - 1, width))], dim=-1)
    return torch.cat([exact((0, 1), (0, width)), middle, exact((height - 1, height), (0, width))], dim=-2)


def _upsample_2x2(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a 2x2 transposed conv with stride 2, computed as a 1x1 conv to ``4 * out_channels`` and a
    pixel shuffle: each input pixel writes its own 2x2 output block, so the two are the same sums, and the
    gradients too (tested). oneDNN runs the 1x1 conv as one matrix multiply; its transposed conv was the slowest
    layer per FLOP of the training step on CPU.

    Args:
        layer: ``nn.ConvTranspose2d(C, O, 2, stride=2)`` (weight ``(C, O, 2, 2)``).
        x: ``(N, C, H, W)``.

    Returns:
        ``(N, O, 2H, 2W)``.
    """
    out_channels = layer.out_channels
    # (C, O, 2, 2) -> (O, 2, 2, C): output channel o * 4 + 2 * a + b, the pixel-shuffle order of block pixel (a, b)
    weight = layer.weight.permute(1, 2, 3, 0).reshape(4 * out_channels, layer.in_channels, 1, 1)
    bias = None if layer.bias is None else layer.bias.repeat_interleave(4)
    return F.pixel_shuffle(F.conv2d(x, weight, bias), 2)


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
def _double_conv(in_channels: int, out_channels: int, batch_norm: bool = True,
                 bn_momentum: float = _BN_MOMENTUM) -> nn.Sequential:
    """Two valid 3x3 convs: conv-ReLU, conv-[batch norm]-ReLU (batch norm sits between the second conv and its
    ReLU in the original)."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3), nn.ReLU(inplace=True),
                               nn.Conv2d(out_channels, out_channels, 3)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels, eps=_BN_EPS, momentum=bn_momentum))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _init_like_keras(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels and zero biases for Conv2D, Conv2DTranspose and Dense (PyTorch's
    own default is a scaled Kaiming-uniform); batch norm starts at gamma 1, beta 0 in both."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)  # fan_in + fan_out is the same for either kernel layout
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def l2_penalty(model: nn.Module, weight: float = L2_WEIGHT) -> torch.Tensor:
    """The original's L2 regularisation term: ``weight * sum(kernel ** 2)`` over the regularised kernels.

    Keras adds ``weight * sum(w ** 2)`` to the loss for every layer built with ``kernel_regularizer=l2(weight)``:
    in ``retouch_unet`` and ``retouch_discriminator`` those are all ``Conv2D`` and ``Dense`` layers, so here every
    ``nn.Conv2d`` and ``nn.Linear`` weight counts. Biases, batch norm and the transposed convs do not (the
    original's ``Deconv2D`` layers have no regulariser). Add the result to the loss; it equals SGD weight decay of
    ``2 * weight`` on those kernels only.

    Args:
        model: any module; its ``Conv2d``/``Linear`` weights are summed.
        weight: the L2 factor, >= 0; the original's 1e-4 by default.

    Returns:
        A scalar tensor (dtype and device of the weights; 0 when there are none) that carries gradients.
    """
    kernels = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not kernels:
        return torch.zeros(())
    return weight * sum(k.pow(2).sum() for k in kernels)


# ----------------------------------------------------------------------------------------------------------------
# The segmenter
# ----------------------------------------------------------------------------------------------------------------
class RmitUNet(nn.Module):
    """PyTorch port of the authors' ``retouch_unet`` (RuwanT/retouch ``custom_networks.py``).

    Layers, as in the original:

    - ``conv1_0``: 7x7 'same' conv to 64 channels + ReLU.
    - Encoder levels of 64, 128, 256 and 512 channels (the last is the bottleneck): valid 3x3 conv + ReLU, valid
      3x3 conv + batch norm + ReLU; 2x2 max pooling (floored) between levels. No dropout in the encoder or the
      bottleneck.
    - Decoder levels of 256, 128 and 64 channels: 2x2 transposed conv with stride 2 (no activation), spatial
      dropout on it and, separately, on the centre-cropped encoder skip (0.25, 0.25 and 0.5 from the deepest
      level up), concatenation (upsampled first), then the two valid 3x3 convs; the last level has no batch norm
      (conv + ReLU twice) and ends with spatial dropout 0.25.
    - Multi-scale output: the bottleneck, the 256- and 128-channel decoder outputs, nearest-upsampled by 8, 4 and
      2 and centre-cropped, concatenated with the last level (512 + 256 + 128 + 64 = 960 channels), then a 3x3
      'same' conv to ``n_classes``; the original applies ReLU and then softmax.

    A ``(256, 128)`` input gives a ``(164, 36)`` output (rows: 256 -> 252 -> 126 -> 122 -> 61 -> 57 -> 28 -> 24
    -> 48 -> 44 -> 88 -> 84 -> 168 -> 164; columns: 128 -> 124 -> 62 -> 58 -> 29 -> 25 -> 12 -> 8 -> 16 -> 12 ->
    24 -> 20 -> 40 -> 36): every valid input loses ``MARGIN`` on each side. The softmax is left to the loss and to
    inference.

    Args:
        in_channels: input channels (3: a B-scan and its two neighbours).
        n_classes: output classes (4: background, IRF, SRF, PED).
        relu_before_softmax: apply the original's ReLU to the output (its last conv has ``activation='relu'``
            before ``Softmax4D``), so that ``softmax(forward(x))`` is the original's output. False returns the
            plain conv output.
        bn_momentum: PyTorch momentum of the batch norms' running statistics (the weight of each new batch).
            The original's Keras default, 0.99 of the old value, is 0.01 here: after a few hundred steps (a short
            CPU budget) the running statistics still lean on their initial values and the network in eval mode
            outputs nearly the same class scores everywhere; 0.1 (PyTorch's default) converges 10x faster.

    Attributes:
        margin: rows and columns lost on each side (46).
    """

    margin = MARGIN

    def __init__(self, in_channels: int = 3, n_classes: int = 4, relu_before_softmax: bool = True,
                 bn_momentum: float = _BN_MOMENTUM):
        super().__init__()
        self.relu_before_softmax = relu_before_softmax
        self.conv1_0 = nn.Conv2d(in_channels, 64, 7, padding=3)
        self.enc1 = _double_conv(64, 64, bn_momentum=bn_momentum)  # conv1_1, conv1_2, bn1
        self.enc2 = _double_conv(64, 128, bn_momentum=bn_momentum)  # conv2_1, conv2_2, bn2
        self.enc3 = _double_conv(128, 256, bn_momentum=bn_momentum)  # conv3_1, conv3_2, bn3
        self.enc4 = _double_conv(256, 512, bn_momentum=bn_momentum)  # conv4_1, conv4_2, bn4 (bottleneck)
        self.pool = nn.MaxPool2d(2)
        self.up3 = nn.ConvTranspose2d(512, 256, 2, stride=2)  # upool3
        self.drop3_up, self.drop3_skip = nn.Dropout2d(0.25), nn.Dropout2d(0.25)
        self.dec3 = _double_conv(512, 256, bn_momentum=bn_momentum)  # dconv3_1, dconv3_2, bn3d
        self.up2 = nn.ConvTranspose2d(256, 128, 2, stride=2)  # upool2
        self.drop2_up, self.drop2_skip = nn.Dropout2d(0.25), nn.Dropout2d(0.25)
        self.dec2 = _double_conv(256, 128, bn_momentum=bn_momentum)  # dconv2_1, dconv2_2, bn2d
        self.up1 = nn.ConvTranspose2d(128, 64, 2, stride=2)  # upool1
        self.drop1_up, self.drop1_skip = nn.Dropout2d(0.5), nn.Dropout2d(0.5)
        self.dec1 = _double_conv(128, 64, batch_norm=False)  # dconv1_1, dconv1_2
        self.drop_last = nn.Dropout2d(0.25)
        self.out = nn.Conv2d(512 + 256 + 128 + 64, n_classes, 3, padding=1)  # seg_out_
        self.apply(_init_like_keras)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the central part of each patch.

        Args:
            x: ``(N, in_channels, H, W)`` float images in [-1, 1) (:func:`utils.model.input_scale.normalise_input`,
                the original's ``(x - 128) / 128``); ``(H, W)`` must pass :func:`valid_input`.

        Returns:
            ``(N, n_classes, H - 92, W - 92)`` logits, same dtype as ``x``; non-negative when
            ``relu_before_softmax``. Output pixel ``(i, j)`` is input pixel ``(i + 46, j + 46)``.

        Raises:
            ValueError: not a 4-D tensor with ``in_channels`` channels, or a spatial size the network cannot take.
        """
        if x.ndim != 4 or x.shape[1] != self.conv1_0.in_channels:
            raise ValueError(f"expected images (N, {self.conv1_0.in_channels}, H, W), got {tuple(x.shape)}")
        if not valid_input(x.shape[-2:]):
            raise ValueError(f"patch size {tuple(x.shape[-2:])} does not fit the network: both sides must be "
                             f"multiples of {INPUT_MULTIPLE} and at least {MIN_INPUT_SIDE}; pad the input to "
                             f"input_shape_for(wanted output size)")
        skip1 = self.enc1(F.relu(self.conv1_0(x)))
        skip2 = self.enc2(self.pool(skip1))
        skip3 = self.enc3(self.pool(skip2))
        bottom = self.enc4(self.pool(skip3))
        dec3 = self._merge(self.up3, bottom, skip3, self.drop3_up, self.drop3_skip, self.dec3)
        dec2 = self._merge(self.up2, dec3, skip2, self.drop2_up, self.drop2_skip, self.dec2)
        dec1 = self.drop_last(self._merge(self.up1, dec2, skip1, self.drop1_up, self.drop1_skip, self.dec1))
        logits = self._multi_scale_logits([(bottom, 8), (dec3, 4), (dec2, 2)], dec1)
        return F.relu(logits) if self.relu_before_softmax else logits

    def _multi_scale_logits(self, levels: list[tuple[torch.Tensor, int]], last: torch.Tensor) -> torch.Tensor:
        """The original's ``seg_out_``: one 3x3 'same' conv over the concatenation of each level nearest-upsampled
        by its factor and centre-cropped to ``last``'s size, then ``last`` (960 channels).

        Computed as the sum of the conv's channel groups applied to each part (a conv is linear in its input
        channels and zero-pads every group alike), each upsampled level's part at the level's own resolution
        (:func:`_upsampled_conv`): the same numbers and gradients up to rounding, without the 960-channel map at
        full resolution, whose upsampling, copying and 4-output conv took about a quarter of the forward time.
        """
        height, width = last.shape[-2:]
        weight = self.out.weight  # (n_classes, 960, 3, 3): input channels in the original's concatenation order
        logits = F.conv2d(last, weight[:, weight.shape[1] - last.shape[1]:], self.out.bias, padding=1)
        start = 0
        for level, factor in levels:
            part = weight[:, start:start + level.shape[1]]
            logits = logits + _upsampled_conv(level, factor, part, height, width)
            start += level.shape[1]
        return logits

    @staticmethod
    def _merge(up: nn.ConvTranspose2d, x: torch.Tensor, skip: torch.Tensor, drop_up: nn.Module,
               drop_skip: nn.Module, block: nn.Module) -> torch.Tensor:
        """A decoder level: ``x`` upsampled by ``up``, the skip centre-cropped to it, each dropped out, concatenated
        (upsampled first) and passed through ``block``."""
        upsampled = _upsample_2x2(up, x)
        skip = _centre_crop(skip, upsampled.shape[-2], upsampled.shape[-1])
        return block(torch.cat([drop_up(upsampled), drop_skip(skip)], dim=1))


# ----------------------------------------------------------------------------------------------------------------
# The discriminator
# ----------------------------------------------------------------------------------------------------------------
def _discriminator_feature_shape(height: int, width: int) -> tuple[int, int]:
    """Spatial size before the global pooling: valid convs lose 4 per level; pool1 halves both sides, pool2 and
    pool3 only the rows (the original's ``pool_size=(2, 1)``)."""
    height, width = height - 4, width - 4  # conv1_1_, conv1_2_ (and the mask branch alike)
    for pool_rows, pool_cols in ((2, 2), (2, 1), (2, 1)):
        height, width = height // pool_rows - 4, width // pool_cols - 4
    return height, width


class RmitDiscriminator(nn.Module):
    """PyTorch port of the authors' ``retouch_discriminator`` (RuwanT/retouch ``custom_networks.py``).

    Tells (image, reference one-hot) pairs from (image, segmenter output) pairs. Layers, as in the original:

    - An image branch and a mask branch, each a 7x7 'same' conv to 64 channels + ReLU, a valid 3x3 conv + ReLU
      and a valid 3x3 conv + batch norm + ReLU (64 channels).
    - Their concatenation (image first, 128 channels), 2x2 max pooling, then blocks of 128, 256 and 512
      channels (valid 3x3 conv + ReLU, valid 3x3 conv + batch norm + ReLU) with (2, 1) max pooling (rows only)
      before the 256 and 512 blocks.
    - Global average pooling and a dense layer to 2 outputs; the original applies softmax.

    The original sees the segmenter-sized ``(164, 36)`` window: the image is cropped by ``BORDER_WIDTH = 46`` on
    each side (``Cropping2D(((46, 46), (46, 46)))`` in ``train_adversarial.py``). Here ``forward`` does that crop
    when the image is larger than the mask.

    Args:
        in_channels: image channels (3).
        n_classes: mask channels (4).
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 4):
        super().__init__()
        self.image_branch = nn.Sequential(nn.Conv2d(in_channels, 64, 7, padding=3), nn.ReLU(inplace=True),
                                          _double_conv(64, 64))  # conv1_0_, conv1_1_, conv1_2_, bn1_
        self.mask_branch = nn.Sequential(nn.Conv2d(n_classes, 64, 7, padding=3), nn.ReLU(inplace=True),
                                         _double_conv(64, 64))  # conv1_0_m, conv1_1_m, conv1_2_m, bn1_m
        self.features = nn.Sequential(
            nn.MaxPool2d(2), _double_conv(128, 128),  # pool1, conv2_1, conv2_2, bn2
            nn.MaxPool2d((2, 1)), _double_conv(128, 256),  # pool2, conv3_1, conv3_2, bn3
            nn.MaxPool2d((2, 1)), _double_conv(256, 512))  # pool3, conv4_1, conv4_2, bn4
        self.head = nn.Linear(512, 2)  # disc_out
        self.apply(_init_like_keras)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Scores of (image, segmentation) pairs.

        Args:
            image: ``(N, in_channels, Hi, Wi)`` float images; when larger than ``mask`` they are centre-cropped to
                its size (a ``(256, 128)`` patch to the ``(164, 36)`` segmenter window).
            mask: ``(N, n_classes, H, W)`` float class maps in [0, 1]: one-hot references or the segmenter's
                softmax.

        Returns:
            ``(N, 2)`` logits; softmax gives the original's output. Which index means "reference" is up to the
            training code (the earlier 1-output version of ``train_adversarial.py`` labelled reference pairs 1).

        Raises:
            ValueError: wrong ranks or channel counts, different batch sizes, an image smaller than the mask, or a
                mask too small for the valid convolutions and poolings.
        """
        in_channels, n_classes = self.image_branch[0].in_channels, self.mask_branch[0].in_channels
        if image.ndim != 4 or mask.ndim != 4 or image.shape[1] != in_channels or mask.shape[1] != n_classes:
            raise ValueError(f"expected image (N, {in_channels}, H, W) and mask (N, {n_classes}, H, W), got "
                             f"{tuple(image.shape)} and {tuple(mask.shape)}")
        (h, w), (hi, wi) = mask.shape[-2:], image.shape[-2:]
        if image.shape[0] != mask.shape[0] or hi < h or wi < w:
            raise ValueError(f"image {tuple(image.shape)} must have the mask's batch size and be at least its "
                             f"size {tuple(mask.shape)}")
        if min(_discriminator_feature_shape(h, w)) < 1:
            raise ValueError(f"mask size {(h, w)} is too small for the discriminator's valid convolutions "
                             f"(the original's is (164, 36))")
        image = _centre_crop(image, h, w)
        x = torch.cat([self.image_branch(image), self.mask_branch(mask)], dim=1)
        return self.head(self.features(x).mean(dim=(-2, -1)))
