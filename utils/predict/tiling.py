"""The network over whole images: its softmax in one pass (:func:`forward_probabilities`) or, for a padded network
(smp_unet) on images larger than ``INFERENCE_TILE_SHAPE``, in tiles overlapping by ``INFERENCE_TILE_OVERLAP`` pixels
whose softmax is blended with :func:`blend_weights` (:func:`sliding_window_probabilities`); and the input sides such
a network takes (:func:`input_multiple`, :func:`padded_size`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from utils.model.runtime import Runtime

PAD_MULTIPLE = 32  # input sizes of a 5-level U-Net; used when the model does not say (smp encoders' output_stride)


def padded_size(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return -(-size // multiple) * multiple


def input_multiple(model: nn.Module) -> int:
    """What the model's input height and width must be multiples of (its encoder's output stride, an ensemble's
    ``input_multiple``, else 32)."""
    if getattr(model, "input_multiple", None):
        return int(model.input_multiple)
    encoder = getattr(model, "encoder", None)
    return int(getattr(encoder, "output_stride", PAD_MULTIPLE) or PAD_MULTIPLE)


def check_tiling(tile_shape: tuple[int, int], overlap: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """``INFERENCE_TILE_SHAPE`` and ``INFERENCE_TILE_OVERLAP`` checked; returns the tile shape as two ints.

    Raises:
        ValueError: a tile side that is not a positive multiple of ``multiple``, or an overlap outside
            ``0 <= overlap < min(tile_shape)``.
    """
    try:
        shape = tuple(int(v) for v in tile_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 2 or min(shape) < multiple or any(v % multiple for v in shape):
        raise ValueError(f"INFERENCE_TILE_SHAPE must be (height, width), positive multiples of {multiple}, got "
                         f"{tile_shape!r}")
    if not 0 <= overlap < min(shape):
        raise ValueError(f"INFERENCE_TILE_OVERLAP must be in [0, {min(shape)}) for tiles {shape}, got {overlap!r}")
    return shape


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """First pixel of each tile covering ``length`` pixels with tiles of ``tile`` overlapping by at least
    ``overlap``: steps of ``tile - overlap``, the last tile flush with the end. ``[0]`` when one tile covers it.
    """
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, tile - overlap))
    return starts + [length - tile]


def blend_weights(shape: tuple[int, int], overlap: int) -> np.ndarray:
    """``(h, w)`` float32 weights of a tile's softmax when tiles are stitched.

    Separable ramps rising linearly from ``1 / (overlap + 1)`` at the tile's edges to 1 at ``overlap`` pixels
    inside (all ones for ``overlap`` 0): where tiles overlap, each counts less near its own border, where
    convolutions see its zero padding. Every weight is positive, so a pixel covered by one tile keeps its value.
    """
    ramps = []
    for n in shape:
        distance = np.minimum(np.arange(1, n + 1), np.arange(n, 0, -1))
        ramps.append(np.minimum(distance, overlap + 1) / (overlap + 1))
    return np.outer(ramps[0], ramps[1]).astype(np.float32)


def forward_probabilities(model: nn.Module, images: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Softmax of the model's logits: ``(n, 3, H, W)`` -> ``(n, C, H, W)`` float32 in [0, 1] (mixed precision
    forward, softmax in float32).

    A mixed-precision pass whose output is not finite everywhere is done again in float32: oneDNN's bf16
    convolutions on AMX CPUs (torch 2.14.1) now and then return NaN for some input shapes (seen on the test suite's
    random networks; a float32 pass of the same batch is finite and reproducible).
    """
    with runtime.autocast():
        logits = model(images)
    probabilities = torch.softmax(logits.float(), dim=1)
    if runtime.autocast_dtype is not None and not bool(torch.isfinite(probabilities).all()):
        probabilities = torch.softmax(model(images).float(), dim=1)
    return probabilities


def sliding_window_probabilities(model: nn.Module, images: torch.Tensor, tile_shape: tuple[int, int],
                                 overlap: int, runtime: Runtime) -> torch.Tensor:
    """Class probabilities of whole images, in one pass when they fit ``tile_shape``, else from blended tiles.

    Args:
        model: maps ``(n, 3, h, w)`` to ``(n, C, h, w)`` logits.
        images: ``(n, 3, H, W)`` float, H and W multiples of the model's input multiple (padded).
        tile_shape: largest ``(height, width)`` sent at once; multiples of the input multiple
            (:func:`check_tiling`).
        overlap: pixels by which neighbouring tiles overlap at least.
        runtime: device, autocast and memory layout.

    Returns:
        ``(n, C, H, W)`` float32 probabilities on the images' device; where tiles overlap, the
        :func:`blend_weights`-weighted mean of their softmax (so a model whose output at a pixel depends on that
        pixel alone gives exactly the untiled result).
    """
    height, width = images.shape[-2:]
    tile_h, tile_w = min(tile_shape[0], height), min(tile_shape[1], width)
    if (tile_h, tile_w) == (height, width):
        return forward_probabilities(model, images, runtime)
    weights = torch.from_numpy(blend_weights((tile_h, tile_w), overlap)).to(images.device)
    total = norm = None
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    for row in tile_starts(height, tile_h, overlap):
        for col in tile_starts(width, tile_w, overlap):
            tile = images[..., row:row + tile_h, col:col + tile_w].contiguous(memory_format=memory_format)
            probabilities = forward_probabilities(model, tile, runtime)
            if total is None:
                total = images.new_zeros((images.shape[0], probabilities.shape[1], height, width), dtype=torch.float32)
                norm = images.new_zeros((height, width), dtype=torch.float32)
            total[..., row:row + tile_h, col:col + tile_w] += probabilities * weights
            norm[row:row + tile_h, col:col + tile_w] += weights
    return total / norm
