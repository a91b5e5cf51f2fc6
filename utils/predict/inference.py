"""Whole-volume inference: every B-scan through the U-Net at the depth resolution it was trained at.

A preprocessed volume (:func:`utils.prepare.preprocessing.preprocess_volume`, ``(z, y, x)`` = (B-scan, depth,
width) uint8) is segmented in batches of B-scans; per batch:

1. :func:`stack_neighbours`: each B-scan with B-scans z-1 and z+1 as channels, ``(n, H, W, 3)`` uint8, the edge
   B-scan repeated at either end (as :func:`utils.train.data_pipeline.load_slice` reads training slices).
2. :func:`scale_depth`: rows resized from ``H`` to :func:`scaled_height` ``(H)``, the width kept. Training crops
   :func:`utils.model.input_scale.physical_patch_shape` rows (``PATCH_SHAPE[0]`` rows at
   ``SPECTRALIS_AXIAL_SPACING_MM``) and resizes them to ``PATCH_SHAPE[0]``; we apply that same factor to the whole
   B-scan with the same resize (``IMAGE_RESAMPLING``), so a Cirrus 1024-row B-scan (0.00195 mm rows) becomes 513.
3. ``PREDICT_REGION = "band"`` (the original): only the ``PATCH_SHAPE[0]`` rows centred on the middle of the
   B-scan's ROI (:func:`bscan_roi`, :func:`band_top`) go on; ``"roi"`` and ``"all"``: the whole B-scan.
4. :func:`network_probabilities`: an unpadded network (rmit_unet) sees the images zero-padded by its margin on
   every side, in one pass; a padded one (smp_unet) sees them zero-padded at the bottom and right to its input
   multiple, whole when they fit ``INFERENCE_TILE_SHAPE``, else in tiles overlapping by ``INFERENCE_TILE_OVERLAP``
   pixels whose softmax is blended with :func:`blend_weights`. Inputs are normalised ``(x - 128) / 128`` as
   :func:`utils.train.data_pipeline.normalise`; with ``TTA_FLIP`` the mirrored pass is averaged in.
5. The padding cropped, the band placed in a background canvas, :func:`restore_depth` scales the class
   probabilities back to ``H`` rows (bilinear: they still sum to 1); with ``BLANK_COLUMNS_BACKGROUND`` the A-scans
   without signal (:func:`utils.model.input_scale.signal_columns`) become background; the arg-max gives the labels;
   :class:`PresenceScores` keeps what the presence scores need.

Only labels and presence statistics are kept per volume (:func:`predict_volume`): the softmax of a Cirrus volume,
128 x 1024 x 512 x 4 float32, would take 1 GB. Asked for them, it also keeps each fluid's probability as it streams,
scaled to uint8 (:func:`probability_to_uint8`, 1/255 steps): 3 x 64 MB for a Cirrus volume.

**Presence score** of a fluid in a volume (for the detection ROC): the largest probability ``p`` such that the
fluid's softmax probability is at least ``p`` over at least ``PRESENCE_MIN_VOLUME_MM3`` of the volume, i.e. the
k-th largest probability over all voxels with ``k = ceil(PRESENCE_MIN_VOLUME_MM3 / voxel volume)``
(:func:`presence_voxel_count`). It lies in [0, 1], grows with the network's confidence, ignores a few isolated
confident voxels, and means the same physical amount of fluid on every vendor.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.io.mhd_io import Geometry
from utils.model.input_scale import (INPUT_CENTRE, INPUT_SCALE, IMAGE_ORDERS, physical_patch_shape, resize_patch,
                                     scaling_spacing_mm, signal_columns)
from utils.model.networks import output_margin
from utils.model.rmit_unet import input_shape_for as rmit_input_shape_for
from utils.model.runtime import Runtime
from utils.prepare.roi import roi_mask

PREDICT_REGIONS = ("band", "roi", "all")  # PREDICT_REGION: see config.py
PAD_MULTIPLE = 32  # input sizes of a 5-level U-Net; used when the model does not say (smp encoders' output_stride)
FLUID_COLOURS = {"IRF": (255, 0, 0), "SRF": (0, 255, 0), "PED": (0, 96, 255)}  # overlay colour of each fluid
OVERLAY_ALPHA = 0.45  # opacity of the fluid colours over the grey B-scan


# --------------------------------------------------------------------------------------------------------------
# Inputs: neighbours, depth scaling, padding
# --------------------------------------------------------------------------------------------------------------
def stack_neighbours(volume: np.ndarray, start: int, stop: int) -> np.ndarray:
    """B-scans ``start..stop-1`` of a volume, each with its two neighbours as channels.

    Args:
        volume: ``(z, y, x)`` preprocessed volume, uint8.
        start, stop: B-scan range, ``0 <= start < stop <= z``.

    Returns:
        ``(stop - start, y, x, 3)`` uint8: channels are B-scans ``z - 1, z, z + 1``, clamped to the volume (the
        first and last B-scans repeat themselves), as training slices are read.
    """
    if not 0 <= start < stop <= volume.shape[0]:
        raise ValueError(f"B-scan range {start}..{stop} outside a volume of {volume.shape[0]} B-scans")
    index = np.arange(start, stop)
    last = volume.shape[0] - 1
    return np.stack([volume[np.maximum(index - 1, 0)], volume[index], volume[np.minimum(index + 1, last)]], axis=-1)


def depth_scale_factor(axial_spacing_mm: float, cfg, height: int = 0) -> float:
    """Factor by which training resized the rows of this ``height``-row volume: ``PATCH_SHAPE[0] / crop height``.

    The crop height is :func:`utils.model.input_scale.physical_patch_shape` (``PATCH_SHAPE[0] *
    SPECTRALIS_AXIAL_SPACING_MM / spacing``, rounded), the spacing as ``DEPTH_SCALE`` takes it
    (:func:`utils.model.input_scale.scaling_spacing_mm`: the original's factor per height, or the header's), so the
    factor is about 0.5 for Cirrus, 0.67 for Topcon 885-row, 1 for Spectralis.

    Raises:
        ValueError: a spacing that is not a positive number.
    """
    spacing = scaling_spacing_mm(axial_spacing_mm, height, cfg.DEPTH_SCALE, cfg.SPECTRALIS_AXIAL_SPACING_MM)
    crop_height, _ = physical_patch_shape(tuple(cfg.PATCH_SHAPE), spacing, cfg.SPECTRALIS_AXIAL_SPACING_MM)
    return cfg.PATCH_SHAPE[0] / crop_height


def scaled_height(height: int, axial_spacing_mm: float, cfg) -> int:
    """Rows of a ``height``-row B-scan at the training depth resolution: ``round(height * factor)``, at least 1."""
    return max(1, int(round(height * depth_scale_factor(axial_spacing_mm, cfg, height))))


def scale_depth(images: np.ndarray, height: int, order: int = 1) -> np.ndarray:
    """B-scans resized to ``height`` rows, the width kept, as training resizes patches.

    Args:
        images: ``(n, H, W, 3)`` uint8.
        height: rows of the result, >= 1.
        order: 1 anti-aliased bilinear, 0 nearest (:func:`utils.model.input_scale.resize_patch`; ``IMAGE_RESAMPLING``).

    Returns:
        ``(n, height, W, 3)`` uint8.
    """
    if images.shape[1] == height:
        return images
    return np.stack([resize_patch(image, (height, images.shape[2]), order=order) for image in images])


def restore_depth(probabilities: torch.Tensor, height: int) -> torch.Tensor:
    """Class probabilities scaled back to ``height`` rows (bilinear, half-pixel centres); the width is kept.

    Args:
        probabilities: ``(n, C, h, W)`` float, each pixel's values summing to 1.
        height: rows of the result.

    Returns:
        ``(n, C, height, W)`` float32; still summing to 1 per pixel (each output is a convex combination).
    """
    if probabilities.shape[2] == height:
        return probabilities
    return F.interpolate(probabilities, size=(height, probabilities.shape[3]), mode="bilinear", align_corners=False)


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


def to_network_input(images: np.ndarray, runtime: Runtime) -> torch.Tensor:
    """``(n, H, W, 3)`` uint8 -> ``(n, 3, H, W)`` float32 ``(x - 128) / 128`` in [-1, 1) on the runtime's device.

    The uint8 travels to the device (4x less than float); the channel-last array is the NHWC layout already.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(runtime.device, non_blocking=True).permute(0, 3, 1, 2)
    tensor = (tensor.float() - INPUT_CENTRE) / INPUT_SCALE
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    return tensor.contiguous(memory_format=memory_format)


# --------------------------------------------------------------------------------------------------------------
# The network over whole B-scans or tiles
# --------------------------------------------------------------------------------------------------------------
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
    forward, softmax in float32)."""
    with runtime.autocast():
        logits = model(images)
    return torch.softmax(logits.float(), dim=1)


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


# --------------------------------------------------------------------------------------------------------------
# Whole volumes
# --------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def iter_probabilities(model: nn.Module, volume: np.ndarray, axial_spacing_mm: float, cfg, runtime: Runtime,
                       batch_size: int, rois: np.ndarray | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The class probabilities of a volume, one batch of B-scans at a time (see the module docstring).

    Args:
        model: the U-Net in eval mode on ``runtime.device`` (channels_last when the runtime says so).
        volume: ``(z, y, x)`` preprocessed volume, uint8.
        axial_spacing_mm: depth of one row in mm (``Geometry.axial_spacing_mm``), > 0.
        cfg: effective config: ``PATCH_SHAPE``, ``SPECTRALIS_AXIAL_SPACING_MM``, ``INFERENCE_TILE_SHAPE``,
            ``INFERENCE_TILE_OVERLAP``.
        runtime: device, autocast and memory layout.
        batch_size: B-scans per forward pass, >= 1.
        rois: ``(z, y, x)`` bool ROI of every B-scan (:func:`volume_rois`) when computed ahead (predict.py does so
            in its read-ahead thread); None computes them here where ``PREDICT_REGION`` needs them.

    Yields:
        ``(start, probabilities)``: the first B-scan of the batch and ``(n, C, y, x)`` float32 probabilities in
        [0, 1] (summing to 1 over C) on ``runtime.device``, at the volume's own size.

    Raises:
        ValueError: a volume that is not 3-D uint8, a batch size < 1, a bad spacing or tiling setting.
    """
    if volume.ndim != 3 or volume.dtype != np.uint8:
        raise ValueError(f"expected a preprocessed (z, y, x) uint8 volume, got shape {volume.shape} dtype "
                         f"{volume.dtype}")
    if int(batch_size) < 1:
        raise ValueError(f"INFERENCE_BATCH_SIZE must be >= 1, got {batch_size!r}")
    if cfg.PREDICT_REGION not in PREDICT_REGIONS:
        raise ValueError(f"PREDICT_REGION must be one of {', '.join(PREDICT_REGIONS)}, got {cfg.PREDICT_REGION!r}")
    n_bscans, height, width = volume.shape
    if rois is not None and rois.shape != volume.shape:
        raise ValueError(f"ROI masks of shape {rois.shape} for a volume of shape {volume.shape}")
    roi_of = (lambda z: rois[z]) if rois is not None else (lambda z: bscan_roi(volume[z], cfg))
    scaled = scaled_height(height, axial_spacing_mm, cfg)
    band = min(int(cfg.PATCH_SHAPE[0]), scaled)
    image_order = IMAGE_ORDERS[cfg.IMAGE_RESAMPLING]
    for start in range(0, n_bscans, int(batch_size)):
        stop = min(start + int(batch_size), n_bscans)
        images = scale_depth(stack_neighbours(volume, start, stop), scaled, image_order)
        if cfg.PREDICT_REGION == "band":
            tops = [band_top(roi_of(z), band, scaled, height) for z in range(start, stop)]
            images = np.stack([image[top:top + band] for image, top in zip(images, tops)])
        probabilities = network_probabilities(model, images, cfg, runtime)
        if cfg.PREDICT_REGION == "band":
            probabilities = place_bands(probabilities, tops, scaled)
        probabilities = restore_depth(probabilities, height)
        if cfg.PREDICT_REGION == "roi":
            inside = torch.from_numpy(np.stack([roi_of(z) for z in range(start, stop)]))
            probabilities = keep_inside(probabilities, inside.to(probabilities.device))
        if cfg.BLANK_COLUMNS_BACKGROUND:
            inside = torch.from_numpy(signal_columns(volume[start:stop]))
            probabilities = keep_inside(probabilities, inside.to(probabilities.device))
        yield start, probabilities


def network_probabilities(model: nn.Module, images: np.ndarray, cfg, runtime: Runtime) -> torch.Tensor:
    """Class probabilities of whole (depth-scaled) B-scans (:func:`single_pass_probabilities`), with
    ``TTA_FLIP`` the mean of those of the B-scans and of their left-right mirrors (mirrored back)."""
    probabilities = single_pass_probabilities(model, images, cfg, runtime)
    if cfg.TTA_FLIP:
        mirrored = single_pass_probabilities(model, np.ascontiguousarray(images[:, :, ::-1]), cfg, runtime)
        probabilities = (probabilities + mirrored.flip(-1)) / 2
    return probabilities


def single_pass_probabilities(model: nn.Module, images: np.ndarray, cfg, runtime: Runtime) -> torch.Tensor:
    """Class probabilities of whole (depth-scaled) B-scans: ``(n, H, W, 3)`` uint8 -> ``(n, C, H, W)`` float32.

    A padded network (smp_unet) sees the images zero-padded at the bottom and right to its input multiple, in one
    pass or in blended tiles (``INFERENCE_TILE_SHAPE``). An unpadded one (rmit_unet, whose output lacks
    ``margin`` pixels on each side) labels, as the original's ``test_model.py``, only the centre of what it sees
    (``UNPADDED_BORDER = "background"``: :func:`centre_probabilities`); with ``"padded"`` it sees the images
    zero-padded by the margin on every side and up to a size it takes, in one pass, so that its output covers every
    pixel (training patches are zero-padded the same way when a B-scan is smaller than a patch).
    """
    _, height, width, _ = images.shape
    margin = output_margin(model)
    if margin and cfg.UNPADDED_BORDER == "background":
        return centre_probabilities(model, images, margin, cfg.N_CLASSES, runtime)
    if margin:
        in_h, in_w = rmit_input_shape_for((height, width))
        pad = ((0, 0), (margin, in_h - height - margin), (margin, in_w - width - margin), (0, 0))
        probabilities = forward_probabilities(model, to_network_input(np.pad(images, pad), runtime), runtime)
        return probabilities[..., :height, :width]
    multiple = input_multiple(model)
    tile_shape = check_tiling(tuple(cfg.INFERENCE_TILE_SHAPE), cfg.INFERENCE_TILE_OVERLAP, multiple)
    pad = ((0, 0), (0, padded_size(height, multiple) - height), (0, padded_size(width, multiple) - width), (0, 0))
    probabilities = sliding_window_probabilities(model, to_network_input(np.pad(images, pad), runtime), tile_shape,
                                                 cfg.INFERENCE_TILE_OVERLAP, runtime)
    return probabilities[..., :height, :width]


def centre_probabilities(model: nn.Module, images: np.ndarray, margin: int, n_classes: int, runtime: Runtime,
                         ) -> torch.Tensor:
    """An unpadded network's probabilities where its output reaches, background elsewhere: ``(n, H, W, 3)`` uint8
    -> ``(n, C, H, W)`` float32, the ``margin`` rows and columns at each border of the images (of the band, for
    ``PREDICT_REGION = "band"``) labelled background (probability 1 for class 0), as the original labels them.

    The images are zero-padded at the bottom and right to the smallest input the network takes whose output covers
    ``(H - 2 margin, W - 2 margin)``; images smaller than ``2 margin + 1`` on a side are all background.
    """
    n, height, width, _ = images.shape
    inner = (height - 2 * margin, width - 2 * margin)
    canvas = torch.zeros((n, n_classes, height, width), dtype=torch.float32, device=runtime.device)
    canvas[:, 0] = 1.0
    if min(inner) < 1:
        return canvas
    in_h, in_w = rmit_input_shape_for(inner)
    pad = ((0, 0), (0, in_h - height), (0, in_w - width), (0, 0))
    probabilities = forward_probabilities(model, to_network_input(np.pad(images, pad), runtime), runtime)
    canvas[..., margin:height - margin, margin:width - margin] = probabilities[..., :inner[0], :inner[1]]
    return canvas


def volume_rois(volume: np.ndarray, cfg) -> np.ndarray | None:
    """The ROI of every B-scan of a preprocessed ``(z, y, x)`` uint8 volume, ``(z, y, x)`` bool
    (:func:`bscan_roi`), when ``PREDICT_REGION`` needs it (``band``, ``roi``); None for ``all``."""
    if cfg.PREDICT_REGION not in ("band", "roi"):
        return None
    return np.stack([bscan_roi(bscan, cfg) for bscan in volume]) if len(volume) else np.zeros(volume.shape, bool)


def bscan_roi(bscan: np.ndarray, cfg) -> np.ndarray:
    """The ROI of one preprocessed B-scan, ``(H, W)`` bool, computed as prepare_data.py computes it (no fluid
    mask at prediction time)."""
    return roi_mask(bscan, None, cfg.ENTROPY_DISK_RADIUS, cfg.ENTROPY_THRESHOLD, cfg.CLOSING_DISK_RADIUS)


def band_top(roi: np.ndarray, band: int, scaled: int, height: int) -> int:
    """First (depth-scaled) row of the band of ``band`` rows centred on the vertical middle of the ROI.

    The original (``test_model.py``) segments a band of the patch height centred on the middle of the retina's
    extent; the middle is taken between the first and last ROI row (the B-scan's middle when the ROI is empty),
    scaled from ``height`` to ``scaled`` rows, and the band kept inside the B-scan.
    """
    rows = np.flatnonzero(roi.any(axis=1))
    middle = (rows[0] + rows[-1]) / 2 if rows.size else (height - 1) / 2
    top = int(round(middle * scaled / height)) - band // 2
    return int(min(max(top, 0), scaled - band))


def place_bands(probabilities: torch.Tensor, tops: list[int], scaled: int) -> torch.Tensor:
    """Band probabilities ``(n, C, band, W)`` placed at rows ``tops`` of ``(n, C, scaled, W)`` canvases that are
    background (probability 1 for class 0) everywhere else."""
    n, channels, band, width = probabilities.shape
    canvas = probabilities.new_zeros((n, channels, scaled, width))
    canvas[:, 0] = 1.0
    for index, top in enumerate(tops):
        canvas[index, :, top:top + band] = probabilities[index]
    return canvas


def keep_inside(probabilities: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """``(n, C, H, W)`` probabilities made background (1 for class 0, 0 for the others) where ``inside`` is
    False (``(n, H, W)`` bool, or ``(n, 1, W)`` for whole columns)."""
    background = torch.zeros_like(probabilities)
    background[:, 0] = 1.0
    return torch.where(inside[:, None], probabilities, background)



def presence_voxel_count(min_volume_mm3: float, voxel_volume_mm3: float, n_voxels: int) -> int:
    """``k`` of the presence score: ``ceil(min_volume_mm3 / voxel_volume_mm3)``, within ``[1, n_voxels]``.

    Raises:
        ValueError: a negative minimum volume or a voxel volume that is not positive.
    """
    if not min_volume_mm3 >= 0 or not voxel_volume_mm3 > 0:
        raise ValueError(f"PRESENCE_MIN_VOLUME_MM3 must be >= 0 and the voxel volume > 0, got {min_volume_mm3!r} "
                         f"and {voxel_volume_mm3!r} mm³")
    return int(min(max(1, math.ceil(min_volume_mm3 / voxel_volume_mm3 - 1e-9)), max(1, n_voxels)))


class PresenceScores:
    """Streaming presence scores: the ``k``-th largest probability of each fluid over all voxels seen.

    ``update`` with each batch of probabilities; ``scores`` at the end. Keeps only the ``k`` largest values per
    fluid, on the probabilities' device. When fewer than ``k`` voxels were seen, the smallest of them is the score.
    """

    def __init__(self, fluids: Mapping[str, int], k: int):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.fluids, self.k = dict(fluids), int(k)
        self._top: dict[str, torch.Tensor | None] = {name: None for name in self.fluids}

    def update(self, probabilities: torch.Tensor) -> None:
        """Takes ``(n, C, ...)`` probabilities; channel ``code`` of each fluid is used."""
        for name, code in self.fluids.items():
            values = probabilities[:, code].reshape(-1)
            top = self._top[name]
            if top is not None:
                if top.numel() >= self.k:
                    values = values[values > top[-1]]  # cheap filter before the sort
                values = torch.cat([top, values])
            self._top[name] = torch.topk(values, min(self.k, values.numel())).values  # sorted, largest first

    def scores(self) -> dict[str, float]:
        """Fluid name -> score in [0, 1]; 0.0 for a fluid when nothing was seen."""
        return {name: float(np.clip(top[-1].item(), 0.0, 1.0)) if top is not None and top.numel() else 0.0
                for name, top in self._top.items()}


def arg_max_labels(probabilities: torch.Tensor) -> torch.Tensor:
    """``(n, C, H, W)`` probabilities -> ``(n, H, W)`` uint8 index of the largest (the first among equals).

    Taken over the innermost dimension of a channels-last copy: on the CPU, arg-max across NCHW planes is ~6x slower.
    """
    channels_last = probabilities.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    return channels_last.argmax(dim=-1).to(torch.uint8)


PROBABILITY_SCALE = 255  # a stored probability p is round(p x this) in uint8: p = value / 255


def probability_to_uint8(probabilities: torch.Tensor) -> torch.Tensor:
    """Probabilities in [0, 1] (any shape, float) -> uint8 ``round(p x 255)`` in 0..255, on the same device
    (values outside [0, 1] from rounding errors are clamped). Read back as ``value / 255``, within 1/510 of ``p``."""
    return torch.round(probabilities.float().clamp(0.0, 1.0) * PROBABILITY_SCALE).to(torch.uint8)


@dataclasses.dataclass
class VolumePrediction:
    """What :func:`predict_volume` keeps of a volume's softmax.

    Attributes:
        labels: ``(z, y, x)`` uint8 arg-max class codes, 0..C-1 (0 background, then the codes of ``cfg.FLUIDS``).
        presence: fluid name -> presence score in [0, 1] (module docstring).
        probabilities: when asked for, fluid name -> ``(z, y, x)`` uint8 softmax probability of that fluid scaled
            to 0..255 (:func:`probability_to_uint8`; before any post-processing of the labels); else None.
    """

    labels: np.ndarray
    presence: dict[str, float]
    probabilities: dict[str, np.ndarray] | None = None


@torch.inference_mode()
def predict_volume(model: nn.Module, volume: np.ndarray, geometry: Geometry, cfg, runtime: Runtime,
                   batch_size: int, on_batch: Callable[[int], Any] | None = None,
                   keep_probabilities: bool = False, rois: np.ndarray | None = None) -> VolumePrediction:
    """Labels and presence scores of one preprocessed volume, and optionally each fluid's probabilities.

    Args:
        model, volume, cfg, runtime, batch_size, rois: as :func:`iter_probabilities`; ``cfg`` also gives
            ``FLUIDS`` and ``PRESENCE_MIN_VOLUME_MM3``.
        geometry: the volume's header geometry (axial spacing for depth scaling, voxel volume for presence).
        on_batch: called with the number of B-scans after each batch (e.g. a progress bar's ``update``).
        keep_probabilities: also keep each fluid's probability volume, uint8-scaled batch by batch (the float
            softmax of the whole volume is never held).

    Returns:
        :class:`VolumePrediction` with labels (and probabilities) of the volume's shape.
    """
    labels = np.empty(volume.shape, np.uint8)
    kept = {name: np.empty(volume.shape, np.uint8) for name in cfg.FLUIDS} if keep_probabilities else None
    k = presence_voxel_count(cfg.PRESENCE_MIN_VOLUME_MM3, geometry.voxel_volume_mm3, volume.size)
    presence = PresenceScores(cfg.FLUIDS, k)
    for start, probabilities in iter_probabilities(model, volume, geometry.axial_spacing_mm, cfg, runtime,
                                                   batch_size, rois):
        n = probabilities.shape[0]
        labels[start:start + n] = arg_max_labels(probabilities).cpu().numpy()
        presence.update(probabilities)
        if kept is not None:
            for name, code in cfg.FLUIDS.items():
                kept[name][start:start + n] = probability_to_uint8(probabilities[:, code]).cpu().numpy()
        if on_batch is not None:
            on_batch(n)
    return VolumePrediction(labels, presence.scores(), kept)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------
def fluid_volumes_mm3(labels: np.ndarray, geometry: Geometry, fluids: Mapping[str, int]) -> dict[str, float]:
    """Volume of each fluid in a label volume: voxel count x voxel volume (from the header spacing).

    Args:
        labels: ``(z, y, x)`` integer labels.
        geometry: the volume's geometry.
        fluids: fluid name -> label code (``cfg.FLUIDS``).

    Returns:
        Fluid name -> volume in mm³ (0.0 where absent).
    """
    counts = np.bincount(labels.ravel(), minlength=max(fluids.values()) + 1)
    return {name: float(counts[code]) * geometry.voxel_volume_mm3 for name, code in fluids.items()}


def overlay_indices(n_bscans: int, count: int | None) -> list[int]:
    """B-scans to draw: ``count`` of them evenly spread from first to last (all when ``count`` is None or larger)."""
    if count is None or count >= n_bscans:
        return list(range(n_bscans))
    return sorted({int(round(v)) for v in np.linspace(0, n_bscans - 1, max(1, count))})


def overlay_bscan(bscan: np.ndarray, labels: np.ndarray, fluids: Mapping[str, int],
                  colours: Mapping[str, tuple[int, int, int]] = FLUID_COLOURS, alpha: float = OVERLAY_ALPHA,
                  ) -> np.ndarray:
    """A grey B-scan with each fluid's pixels tinted by its colour.

    Args:
        bscan: ``(H, W)`` uint8 grey values.
        labels: ``(H, W)`` integer labels.
        fluids: fluid name -> label code; fluids without a colour are not drawn.
        colours: fluid name -> RGB.
        alpha: colour opacity in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    rgb = np.repeat(bscan[..., None], 3, axis=2).astype(np.float32)
    for name, code in fluids.items():
        if name in colours:
            where = labels == code
            rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colours[name], np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
