"""Whole-volume inference: every B-scan through the U-Net at the depth resolution it was trained at.

A preprocessed volume (:func:`utils.prepare.preprocessing.preprocess_volume`, ``(z, y, x)`` = (B-scan, depth,
width) uint8) is segmented in batches of B-scans (:func:`iter_probabilities`); per batch:

1. :func:`stack_neighbours`: each B-scan with B-scans z-1 and z+1 as channels (``INPUT_CHANNELS``), ``(n, H, W,
   3)`` uint8, the edge B-scan repeated at either end (as :func:`utils.train.data_pipeline.load_slice` reads
   training slices).
2. :func:`scale_depth`: rows resized from ``H`` to :func:`scaled_height` ``(H)``, the width kept. Training crops
   :func:`utils.model.input_scale.physical_patch_shape` rows (``PATCH_SHAPE[0]`` rows at
   ``SPECTRALIS_AXIAL_SPACING_MM``) and resizes them to ``PATCH_SHAPE[0]``; we apply that same factor to the whole
   B-scan with the same resize (``IMAGE_RESAMPLING``), so a Cirrus 1024-row B-scan becomes 512 rows
   (``DEPTH_SCALE = "height_table"``: the original's factor 1/2); with ``"spacing"`` and the header's 0.001953 mm
   rows (2 mm / 1024), 513 (its 511-row crop is resized to 256).
3. ``PREDICT_REGION`` (:data:`utils.predict.band.PREDICT_REGIONS`): with ``"band"`` (the original) only the band of
   ``PATCH_SHAPE[0]`` rows centred on the B-scan's ROI goes on; with ``"roi"`` and ``"all"`` the whole B-scan.
4. :func:`network_probabilities`: an unpadded network (rmit_unet) labels only the centre its output reaches
   (``UNPADDED_BORDER = "background"``, the original) or sees the images zero-padded by its margin (``"padded"``:
   :data:`UNPADDED_BORDERS`), in one pass; a padded one (smp_unet) sees them padded to its input multiple, whole or
   in blended tiles (:mod:`utils.predict.tiling`). Inputs are :func:`utils.model.input_scale.normalise_input`'d as
   in training (:func:`to_network_input`); with ``TTA_FLIP`` the mirrored pass is averaged in, with
   ``TTA_ROTATE_DEGREES`` the rotated passes.
5. The padding cropped, the band placed in a background canvas, :func:`restore_depth` scales the class
   probabilities back to ``H`` rows (bilinear: they still sum to 1); with ``"roi"`` the pixels outside the ROI and
   with ``BLANK_COLUMNS_BACKGROUND`` the A-scans without signal (:func:`utils.model.input_scale.signal_columns`)
   become background.

Only labels (the arg-max) and presence scores (:mod:`utils.predict.presence`) are kept per volume
(:func:`predict_volume`): the softmax of a Cirrus volume, 128 x 1024 x 512 x 4 float32, would take 1 GB. Asked for
them, it also keeps each fluid's probability as it streams, scaled to uint8 (:func:`probability_to_uint8`, 1/255
steps): 3 x 64 MB for a Cirrus volume.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.io.mhd_io import Geometry
from utils.model.input_scale import (IMAGE_ORDERS, channel_bscans, normalise_input, physical_patch_shape, resize_patch,
                                     scaling_spacing_mm, signal_columns)
from utils.model.networks import output_margin
from utils.model.rmit_unet import input_shape_for as rmit_input_shape_for
from utils.model.runtime import Runtime
from utils.predict.band import PREDICT_REGIONS, band_top, bscan_roi, keep_inside, place_bands
from utils.predict.presence import PresenceScores, presence_voxel_count
from utils.predict.settings import InferenceSettings
from utils.predict.tiling import (check_tiling, forward_probabilities, input_multiple, padded_size,
                                  sliding_window_probabilities)


# --------------------------------------------------------------------------------------------------------------
# Inputs: neighbours, depth scaling, scaling to the network's input
# --------------------------------------------------------------------------------------------------------------
def stack_neighbours(volume: np.ndarray, start: int, stop: int, input_channels: str = "neighbours") -> np.ndarray:
    """B-scans ``start..stop-1`` of a volume as the network's three input channels, as training slices are read.

    Args:
        volume: ``(z, y, x)`` preprocessed volume, uint8.
        start, stop: B-scan range, ``0 <= start < stop <= z``.
        input_channels: ``INPUT_CHANNELS`` (:func:`utils.model.input_scale.channel_bscans`): ``"neighbours"``, the
            channels are B-scans ``z - 1, z, z + 1``, clamped to the volume (the first and last B-scans repeat
            themselves); ``"repeat"``, B-scan ``z`` three times.

    Returns:
        ``(stop - start, y, x, 3)`` uint8.
    """
    if not 0 <= start < stop <= volume.shape[0]:
        raise ValueError(f"B-scan range {start}..{stop} outside a volume of {volume.shape[0]} B-scans")
    channels = channel_bscans(np.arange(start, stop), volume.shape[0], input_channels)
    return np.stack([volume[index] for index in channels], axis=-1)


def depth_scale_factor(axial_spacing_mm: float, settings: InferenceSettings, height: int = 0) -> float:
    """Factor by which training resized the rows of this ``height``-row volume: ``PATCH_SHAPE[0] / crop height``.

    The crop height is :func:`utils.model.input_scale.physical_patch_shape` (``PATCH_SHAPE[0] *
    SPECTRALIS_AXIAL_SPACING_MM / spacing``, rounded), the spacing as ``DEPTH_SCALE`` takes it
    (:func:`utils.model.input_scale.scaling_spacing_mm`: the original's factor per height, or the header's), so the
    factor is about 0.5 for Cirrus, 0.67 for Topcon 885-row, 1 for Spectralis.

    Raises:
        ValueError: a spacing that is not a positive number.
    """
    spacing = scaling_spacing_mm(axial_spacing_mm, height, settings.depth_scale, settings.spectralis_axial_spacing_mm)
    crop_height, _ = physical_patch_shape(tuple(settings.patch_shape), spacing, settings.spectralis_axial_spacing_mm)
    return settings.patch_shape[0] / crop_height


def scaled_height(height: int, axial_spacing_mm: float, settings: InferenceSettings) -> int:
    """Rows of a ``height``-row B-scan at the training depth resolution: ``round(height * factor)``, at least 1."""
    return max(1, int(round(height * depth_scale_factor(axial_spacing_mm, settings, height))))


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


def to_network_input(images: np.ndarray, runtime: Runtime) -> torch.Tensor:
    """``(n, H, W, 3)`` uint8 -> ``(n, 3, H, W)`` float32 in [-1, 1) (:func:`utils.model.input_scale.normalise_input`)
    on the runtime's device.

    The uint8 travels to the device (4x less than float); the channel-last array is the NHWC layout already.
    """
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(runtime.device, non_blocking=True).permute(0, 3, 1, 2)
    tensor = normalise_input(tensor.float())
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    return tensor.contiguous(memory_format=memory_format)


# --------------------------------------------------------------------------------------------------------------
# Whole volumes
# --------------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def iter_probabilities(model: nn.Module, volume: np.ndarray, axial_spacing_mm: float, settings: InferenceSettings,
                       runtime: Runtime,
                       batch_size: int, rois: np.ndarray | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """The class probabilities of a volume, one batch of B-scans at a time (see the module docstring).

    Args:
        model: the U-Net in eval mode on ``runtime.device`` (channels_last when the runtime says so).
        volume: ``(z, y, x)`` preprocessed volume, uint8.
        axial_spacing_mm: depth of one row in mm (``Geometry.axial_spacing_mm``), > 0.
        settings: depth scaling, region, passes and tiling (:class:`utils.predict.settings.InferenceSettings`).
        runtime: device, autocast and memory layout.
        batch_size: B-scans per forward pass, >= 1.
        rois: ``(z, y, x)`` bool ROI of every B-scan (:func:`utils.predict.band.volume_rois`) when computed ahead
            (predict.py does so in its read-ahead thread); None computes them here where ``PREDICT_REGION`` needs
            them.

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
    n_bscans, height, width = volume.shape
    if rois is not None and rois.shape != volume.shape:
        raise ValueError(f"ROI masks of shape {rois.shape} for a volume of shape {volume.shape}")
    roi_of = (lambda z: rois[z]) if rois is not None else (lambda z: bscan_roi(volume[z], settings))
    scaled = scaled_height(height, axial_spacing_mm, settings)
    band = min(int(settings.patch_shape[0]), scaled)
    image_order = IMAGE_ORDERS[settings.image_resampling]
    region = PREDICT_REGIONS[settings.predict_region]
    for start in range(0, n_bscans, int(batch_size)):
        stop = min(start + int(batch_size), n_bscans)
        images = scale_depth(stack_neighbours(volume, start, stop, settings.input_channels), scaled, image_order)
        if region.band:
            tops = [band_top(roi_of(z), band, scaled, height) for z in range(start, stop)]
            images = np.stack([image[top:top + band] for image, top in zip(images, tops)])
        probabilities = network_probabilities(model, images, settings, runtime)
        if region.band:
            probabilities = place_bands(probabilities, tops, scaled)
        probabilities = restore_depth(probabilities, height)
        if region.inside_roi:
            inside = torch.from_numpy(np.stack([roi_of(z) for z in range(start, stop)]))
            probabilities = keep_inside(probabilities, inside.to(probabilities.device))
        if settings.blank_columns_background:
            inside = torch.from_numpy(signal_columns(volume[start:stop]))
            probabilities = keep_inside(probabilities, inside.to(probabilities.device))
        yield start, probabilities


def network_probabilities(model: nn.Module, images: np.ndarray, settings: InferenceSettings, runtime: Runtime,
                          ) -> torch.Tensor:
    """Class probabilities of whole (depth-scaled) B-scans (:func:`flip_averaged_probabilities`), with
    ``TTA_ROTATE_DEGREES`` also those of the B-scans rotated by each angle, rotated back (:func:`rotated_images`,
    :func:`rotated_back`) and averaged in, each pixel weighted by how much of it the rotated pass covers."""
    probabilities = flip_averaged_probabilities(model, images, settings, runtime)
    if not settings.tta_rotate_degrees:
        return probabilities
    reach = output_reach(model, images.shape[1:3], settings, probabilities.device)
    total, weight = probabilities.clone(), torch.ones_like(probabilities[:, :1])
    for angle in settings.tta_rotate_degrees:
        rotated = flip_averaged_probabilities(model, rotated_images(images, angle), settings, runtime)
        back, covered = rotated_back(rotated, angle, reach)
        covered = covered * reach  # where both passes have the network's own scores
        total += back * covered
        weight += covered
    return total / weight


def output_reach(model: nn.Module, shape: tuple[int, int], settings: InferenceSettings, device: torch.device
                 ) -> torch.Tensor:
    """``(1, 1, H, W)`` float32: 1 where a pass over images of ``shape`` = (H, W) gives the network's own scores, 0
    on the border an unpadded network cannot reach and labels background (``UNPADDED_BORDER = "background"``)."""
    height, width = shape
    margin = output_margin(model)
    if not margin or settings.unpadded_border != "background":
        return torch.ones((1, 1, height, width), device=device)
    reach = torch.zeros((1, 1, height, width), device=device)
    reach[..., margin:max(margin, height - margin), margin:max(margin, width - margin)] = 1.0
    return reach


def flip_averaged_probabilities(model: nn.Module, images: np.ndarray, settings: InferenceSettings, runtime: Runtime,
                                ) -> torch.Tensor:
    """Class probabilities of whole (depth-scaled) B-scans (:func:`single_pass_probabilities`), with ``TTA_FLIP``
    the mean of those of the B-scans and of their left-right mirrors (mirrored back)."""
    probabilities = single_pass_probabilities(model, images, settings, runtime)
    if settings.tta_flip:
        mirrored = single_pass_probabilities(model, np.ascontiguousarray(images[:, :, ::-1]), settings, runtime)
        probabilities = (probabilities + mirrored.flip(-1)) / 2
    return probabilities


def _rotation(tensor: torch.Tensor, angle: float, mode: str) -> torch.Tensor:
    """``tensor`` (n, C, H, W) float rotated by ``angle`` degrees anticlockwise about its centre, in pixels (the
    rows and columns taken as equal steps, as training's ``skimage.transform.rotate``), zeros outside."""
    height, width = tensor.shape[-2:]
    radians = np.deg2rad(angle)
    cos, sin = float(np.cos(radians)), float(np.sin(radians))
    # affine_grid works in coordinates normalised to [-1, 1] per axis: the rotation in pixels, rescaled to them
    theta = torch.tensor([[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
                         dtype=tensor.dtype, device=tensor.device)
    grid = F.affine_grid(theta.expand(tensor.shape[0], 2, 3), list(tensor.shape), align_corners=False)
    return F.grid_sample(tensor, grid, mode=mode, padding_mode="zeros", align_corners=False)


def rotated_images(images: np.ndarray, angle: float) -> np.ndarray:
    """``(n, H, W, 3)`` uint8 B-scans rotated by ``angle`` degrees about their centres (bilinear, zeros outside),
    the same shape and dtype."""
    planes = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    rotated = _rotation(planes, angle, mode="bilinear").round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(rotated.permute(0, 2, 3, 1).numpy())


def rotated_back(probabilities: torch.Tensor, angle: float, reach: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The probabilities ``(n, C, H, W)`` of B-scans rotated by ``angle``, rotated back by ``-angle`` (bilinear),
    and ``(n, 1, H, W)`` the share in [0, 1] of each pixel they cover: 0 where the rotated B-scan did not reach, or
    where its pass had no scores of its own (``reach``, ``(1, 1, H, W)``: :func:`output_reach`; None: everywhere)."""
    valid = torch.ones_like(probabilities[:, :1]) if reach is None else reach.expand_as(probabilities[:, :1])
    back = _rotation(torch.cat([probabilities * valid, valid], dim=1), -angle, mode="bilinear")
    covered = back[:, -1:]
    return back[:, :-1] / covered.clamp_min(1e-6), covered


def single_pass_probabilities(model: nn.Module, images: np.ndarray, settings: InferenceSettings, runtime: Runtime,
                              ) -> torch.Tensor:
    """Class probabilities of whole (depth-scaled) B-scans: ``(n, H, W, 3)`` uint8 -> ``(n, C, H, W)`` float32.

    A padded network (smp_unet) sees the images zero-padded at the bottom and right to its input multiple, in one
    pass or in blended tiles (``INFERENCE_TILE_SHAPE``). An unpadded one (rmit_unet, whose output lacks
    ``margin`` pixels on each side) goes through ``UNPADDED_BORDER``'s function (:data:`UNPADDED_BORDERS`).
    """
    _, height, width, _ = images.shape
    margin = output_margin(model)
    if margin:
        return UNPADDED_BORDERS[settings.unpadded_border](model, images, margin, settings.n_classes, runtime)
    multiple = input_multiple(model)
    tile_shape = check_tiling(tuple(settings.inference_tile_shape), settings.inference_tile_overlap, multiple)
    pad = ((0, 0), (0, padded_size(height, multiple) - height), (0, padded_size(width, multiple) - width), (0, 0))
    probabilities = sliding_window_probabilities(model, to_network_input(np.pad(images, pad), runtime), tile_shape,
                                                 settings.inference_tile_overlap, runtime)
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


def margin_padded_probabilities(model: nn.Module, images: np.ndarray, margin: int, n_classes: int, runtime: Runtime,
                                ) -> torch.Tensor:
    """An unpadded network's probabilities of every pixel: ``(n, H, W, 3)`` uint8 -> ``(n, C, H, W)`` float32, the
    images zero-padded by ``margin`` on every side and up to a size the network takes, in one pass (training patches
    are zero-padded the same way when a B-scan is smaller than a patch). ``n_classes`` is not read (the network's
    output has them); it keeps :data:`UNPADDED_BORDERS`' signature."""
    _, height, width, _ = images.shape
    in_h, in_w = rmit_input_shape_for((height, width))
    pad = ((0, 0), (margin, in_h - height - margin), (margin, in_w - width - margin), (0, 0))
    probabilities = forward_probabilities(model, to_network_input(np.pad(images, pad), runtime), runtime)
    return probabilities[..., :height, :width]


# UNPADDED_BORDER's names -> how an unpadded network (output ``margin`` pixels short on each side) segments whole
# B-scans: ``(model, images, margin, n_classes, runtime) -> (n, C, H, W)`` probabilities
UNPADDED_BORDERS: dict[str, Callable[[nn.Module, np.ndarray, int, int, Runtime], torch.Tensor]] = {
    "background": centre_probabilities,  # the original's: the border it cannot reach is background
    "padded": margin_padded_probabilities,
}


def arg_max_labels(probabilities: torch.Tensor) -> torch.Tensor:
    """``(n, C, H, W)`` probabilities -> ``(n, H, W)`` uint8 index of the largest (the first among equals).

    Taken over the innermost dimension of a channels-last copy: on the CPU, arg-max across NCHW planes is ~6x slower.
    """
    channels_last = probabilities.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
    return channels_last.argmax(dim=-1).to(torch.uint8)


def thresholded_fluid_labels(probabilities: torch.Tensor, fluid_threshold: float) -> torch.Tensor:
    """``(n, C, H, W)`` probabilities (class 0 background, 1..C-1 the fluids) -> ``(n, H, W)`` uint8 labels:
    ``FLUID_THRESHOLD``. A pixel is fluid where ``1 - p(background) >= fluid_threshold``, labelled the fluid of the
    largest probability (the first among equals); else 0. ``fluid_threshold`` 0 (off) is :func:`arg_max_labels`,
    the method's rule (note that 0.5 is not: a pixel at 0.4 background and 0.3 for each of two fluids is fluid)."""
    if fluid_threshold <= 0:
        return arg_max_labels(probabilities)
    fluid = arg_max_labels(probabilities[:, 1:]) + 1
    return torch.where(1.0 - probabilities[:, 0] >= fluid_threshold, fluid, torch.zeros_like(fluid))


PROBABILITY_SCALE = 255  # a stored probability p is round(p x this) in uint8: p = value / 255


def probability_to_uint8(probabilities: torch.Tensor) -> torch.Tensor:
    """Probabilities in [0, 1] (any shape, float) -> uint8 ``round(p x 255)`` in 0..255, on the same device
    (values outside [0, 1] from rounding errors are clamped). Read back as ``value / 255``, within 1/510 of ``p``."""
    return torch.round(probabilities.float().clamp(0.0, 1.0) * PROBABILITY_SCALE).to(torch.uint8)


@dataclasses.dataclass
class VolumePrediction:
    """What :func:`predict_volume` keeps of a volume's softmax.

    Attributes:
        labels: ``(z, y, x)`` uint8 class codes, 0..C-1 (0 background, then the codes of ``FLUIDS``): the arg-max, or
            ``FLUID_THRESHOLD``'s rule (:func:`thresholded_fluid_labels`).
        presence: fluid name -> presence score in [0, 1] (:mod:`utils.predict.presence`).
        probabilities: when asked for, fluid name -> ``(z, y, x)`` uint8 softmax probability of that fluid scaled
            to 0..255 (:func:`probability_to_uint8`; before any post-processing of the labels); else None.
    """

    labels: np.ndarray
    presence: dict[str, float]
    probabilities: dict[str, np.ndarray] | None = None


@torch.inference_mode()
def predict_volume(model: nn.Module, volume: np.ndarray, geometry: Geometry, settings: InferenceSettings,
                   runtime: Runtime,
                   batch_size: int, on_batch: Callable[[int], Any] | None = None,
                   keep_probabilities: bool = False, rois: np.ndarray | None = None) -> VolumePrediction:
    """Labels and presence scores of one preprocessed volume, and optionally each fluid's probabilities.

    Args:
        model, volume, settings, runtime, batch_size, rois: as :func:`iter_probabilities`; ``settings`` also
            gives the fluids' codes and the presence scores' smallest volume.
        geometry: the volume's header geometry (axial spacing for depth scaling, voxel volume for presence).
        on_batch: called with the number of B-scans after each batch (e.g. a progress bar's ``update``).
        keep_probabilities: also keep each fluid's probability volume, uint8-scaled batch by batch (the float
            softmax of the whole volume is never held).

    Returns:
        :class:`VolumePrediction` with labels (and probabilities) of the volume's shape.
    """
    labels = np.empty(volume.shape, np.uint8)
    kept = {name: np.empty(volume.shape, np.uint8) for name in settings.fluids} if keep_probabilities else None
    k = presence_voxel_count(settings.presence_min_volume_mm3, geometry.voxel_volume_mm3, volume.size)
    presence = PresenceScores(settings.fluids, k)
    for start, probabilities in iter_probabilities(model, volume, geometry.axial_spacing_mm, settings, runtime,
                                                   batch_size, rois):
        n = probabilities.shape[0]
        labels[start:start + n] = thresholded_fluid_labels(probabilities, settings.fluid_threshold).cpu().numpy()
        presence.update(probabilities)
        if kept is not None:
            for name, code in settings.fluids.items():
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
