"""The network's input scale, shared by training patches and whole-volume inference: intensities mapped to [-1, 1),
and every vendor's B-scans resized in depth so that one row spans about the same millimetres (the Spectralis axial
spacing; by default through the original's factor per B-scan height, ``DEPTH_SCALE``).

Conventions: a B-scan or patch is ``(H, W)`` or ``(H, W, C)`` (rows = depth, columns = A-scans); a shape is
``(height, width)``.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np
from PIL import Image


# The network's input: ``(x - INPUT_CENTRE) / INPUT_SCALE`` of the 0..255 preprocessed intensities, in [-1, 1), as
# the original (``remove_mean`` in train_model.py): :func:`normalise_input`
INPUT_CENTRE = 128.0
INPUT_SCALE = 128.0

ArrayOrTensor = TypeVar("ArrayOrTensor")

# INPUT_CHANNELS -> the B-scans behind the network's three input channels, as offsets from B-scan z (clamped to the
# volume): the original's neighbours, or the B-scan itself three times. The names are utils/configuration.py's
# CHOICES["INPUT_CHANNELS"], checked there.
CHANNEL_OFFSETS: dict[str, tuple[int, int, int]] = {"neighbours": (-1, 0, 1), "repeat": (0, 0, 0)}


def channel_bscans(z: np.ndarray, n_bscans: int, input_channels: str) -> list[np.ndarray]:
    """The B-scan indices of the three input channels of B-scans ``z`` of an ``n_bscans``-B-scan volume.

    The one definition: training slices (:func:`utils.train.data_pipeline.load_slice`) and inference
    (:func:`utils.predict.inference.stack_neighbours`) both call it.

    Args:
        z: B-scan indices, any integer array (or one int), each in ``0..n_bscans-1``.
        n_bscans: the volume's B-scan count, >= 1.
        input_channels: ``INPUT_CHANNELS``, a name in :data:`CHANNEL_OFFSETS`.

    Returns:
        Three integer arrays shaped as ``z`` (0-d for an int): the channels' B-scans, clamped to ``0..n_bscans-1``
        (the edge B-scan repeats itself).
    """
    return [np.clip(np.asarray(z) + offset, 0, n_bscans - 1) for offset in CHANNEL_OFFSETS[input_channels]]


def normalise_input(intensities: ArrayOrTensor) -> ArrayOrTensor:
    """The network's input scale, ``(x - 128) / 128``: 0..255 preprocessed intensities -> [-1, 1).

    The one definition: training patches (:func:`utils.train.data_pipeline.normalise`), inference
    (:func:`utils.predict.inference.to_network_input`) and the ROI's entropy (:data:`utils.prepare.roi.ENTROPY_LEVELS`)
    all call it.

    Args:
        intensities: a float32 NumPy array or torch tensor, any shape (convert uint8 first: the result keeps the
            input's dtype).

    Returns:
        The same kind, shape and dtype; exact for integer intensities (128 is a power of two).
    """
    return (intensities - INPUT_CENTRE) / INPUT_SCALE


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers: geometry and resizing
# ----------------------------------------------------------------------------------------------------------------
def signal_columns(bscans: np.ndarray) -> np.ndarray:
    """Which A-scans hold signal: ``(n, H, W)`` preprocessed B-scans (any dtype, 0 = no signal) -> ``(n, 1, W)``
    bool, False where every pixel of the column is 0 (a device's black border, an export's blanked edge; the real
    development set's unannotated edge columns). ``(H, W)`` -> ``(1, W)``."""
    return np.any(bscans != 0, axis=-2, keepdims=True)


def check_patch_shape(pshape: Sequence[int], name: str = "pshape") -> tuple[int, int]:
    """``pshape`` as two positive ints, or ValueError."""
    try:
        h, w = (int(v) for v in pshape)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width) in pixels, got {pshape!r}") from None
    if h < 1 or w < 1 or (h, w) != tuple(pshape):
        raise ValueError(f"{name} must be two positive integers (height, width), got {pshape!r}")
    return h, w


# The original's crop height per B-scan height (custom_nuts.py, SHAPE_MULT): crop = PATCH_SHAPE[0] x this, for the
# RETOUCH devices' heights (Cirrus 1024, Spectralis 496, Topcon 650 and 885 rows)
ORIGINAL_SHAPE_MULT = {1024: 2.0, 496: 1.0, 650: 0.004 / 0.0035, 885: 0.004 / 0.0026}


def _height_table_spacing_mm(axial_spacing_mm: float, height: int, reference_spacing_mm: float) -> float:
    """``DEPTH_SCALE = "height_table"`` (the original): for a height of :data:`ORIGINAL_SHAPE_MULT` the spacing that
    gives the original's factor (``reference / factor``: Spectralis 496 rows crop exactly ``PATCH_SHAPE[0]`` rows,
    where the header's 0.00387 mm gives 258); other heights, which the original could not read, the header's."""
    if int(height) in ORIGINAL_SHAPE_MULT:
        return float(reference_spacing_mm) / ORIGINAL_SHAPE_MULT[int(height)]
    return axial_spacing_mm


# DEPTH_SCALE -> the spacing patches are scaled by: (the header's axial spacing in mm, the B-scan height in rows, the
# reference spacing in mm) -> mm. The names are utils/configuration.py's CHOICES["DEPTH_SCALE"], checked there.
DEPTH_SCALES = {
    "height_table": _height_table_spacing_mm,
    "spacing": lambda axial_spacing_mm, height, reference_spacing_mm: axial_spacing_mm,  # the header's own
}


def scaling_spacing_mm(axial_spacing_mm: float, height: int, depth_scale: str, reference_spacing_mm: float,
                       ) -> float:
    """The axial spacing by which a ``height``-row volume's patches are scaled (:func:`physical_patch_shape`), as
    ``depth_scale`` (``DEPTH_SCALE``, a name of :data:`DEPTH_SCALES`) says."""
    return DEPTH_SCALES[depth_scale](axial_spacing_mm, height, reference_spacing_mm)


def physical_patch_shape(pshape: Sequence[int], axial_spacing_mm: float,
                         reference_spacing_mm: float) -> tuple[int, int]:
    """The crop size that covers the depth of a ``pshape`` patch at ``reference_spacing_mm`` on this volume.

    The original hard-coded a factor per B-scan height (:data:`ORIGINAL_SHAPE_MULT`, ``DEPTH_SCALE =
    "height_table"`` through :func:`scaling_spacing_mm`); ``"spacing"`` derives it from the header spacing, so any
    height (and any future device) works. With the Spectralis spacing 0.0039 mm as reference, Cirrus (0.00195 mm)
    gives 2 as the original, Topcon 0.0026 mm gives 1.5 (the original: 0.004 / 0.0026 = 1.54) and Topcon 0.0035 mm
    1.11 (original 1.14).

    Args:
        pshape: ``(height, width)`` of the patch in pixels at the reference spacing, e.g. ``config.PATCH_SHAPE``.
        axial_spacing_mm: this volume's depth per row in mm (SimpleITK spacing ``[1]``), > 0.
        reference_spacing_mm: depth per row in mm that ``pshape[0]`` refers to, > 0.

    Returns:
        ``(round(height * reference_spacing_mm / axial_spacing_mm), width)``, height at least 1. The width is kept:
        the lateral spacing of the three vendors is about the same (6 mm over 512 A-scans).

    Raises:
        ValueError: a spacing that is not a finite positive number, or a malformed ``pshape``.
    """
    h, w = check_patch_shape(pshape)
    for name, value in (("axial_spacing_mm", axial_spacing_mm), ("reference_spacing_mm", reference_spacing_mm)):
        if not (isinstance(value, (int, float, np.number)) and np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of mm, got {value!r}; read it from the volume's "
                             f"header (SimpleITK spacing (x, y, z): y is the axial spacing)")
    return max(1, int(round(h * float(reference_spacing_mm) / float(axial_spacing_mm)))), w


def _nearest_index(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` output pixels: nearest pixel centre (the skimage ``order=0`` grid)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.intp), n_in - 1)


def _pil_resize(plane: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 ``(H, W)``/``(H, W, 3)`` or float32 ``(H, W)`` array resized by Pillow's anti-aliased bilinear filter."""
    resized = Image.fromarray(np.ascontiguousarray(plane)).resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    return np.array(resized)  # np.array, not asarray: a writable copy for in-place augmentation downstream


# IMAGE_RESAMPLING -> the resize_patch order of images, in training patches and in inference alike (the names are
# utils/configuration.py's CHOICES["IMAGE_RESAMPLING"], checked there)
IMAGE_ORDERS = {"linear": 1, "nearest": 0}


def resize_patch(patch: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """A patch resized to ``shape``.

    ``order=1`` is for images: linear interpolation, anti-aliased when shrinking (Pillow's BILINEAR filter, whose
    triangle kernel widens with the shrink factor; about 50x faster than ``skimage.transform.resize`` with
    ``anti_aliasing=True`` here and equivalent in intent). ``order=0`` is for label masks: nearest neighbour on
    pixel centres without any smoothing, so the result holds only values of the input.

    Args:
        patch: ``(h, w)`` or ``(h, w, C)``. For ``order=1`` any numeric dtype (uint8 is fastest), not bool.
        shape: ``(height, width)`` of the result.
        order: 0 (nearest, for masks) or 1 (anti-aliased linear, for images).

    Returns:
        ``(height, width)`` or ``(height, width, C)`` array of the dtype of ``patch`` (integers rounded and clipped
        to the dtype's range), a new array even if no resizing was needed.

    Raises:
        ValueError: ``order`` not 0 or 1, or ``order=1`` on a bool array.
    """
    shape = check_patch_shape(shape, "shape")
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (nearest, masks) or 1 (linear, images), got {order!r}")
    if patch.shape[:2] == shape:
        return patch.copy()
    if order == 0:
        rows, cols = _nearest_index(patch.shape[0], shape[0]), _nearest_index(patch.shape[1], shape[1])
        return patch[rows][:, cols]
    dtype = patch.dtype
    if dtype == np.bool_:
        raise ValueError("a bool patch is a mask: resize it with order=0")
    if dtype == np.uint8 and (patch.ndim == 2 or patch.shape[2] == 3):
        return _pil_resize(patch, shape)
    planes = patch if patch.ndim == 3 else patch[..., None]
    if dtype == np.uint8:
        out = [_pil_resize(planes[..., k], shape) for k in range(planes.shape[2])]
        return np.stack(out, axis=-1).reshape(shape + patch.shape[2:])
    out = np.stack([_pil_resize(planes[..., k].astype(np.float32), shape) for k in range(planes.shape[2])], axis=-1)
    out = out.reshape(shape + patch.shape[2:])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        out = np.clip(np.rint(out), info.min, info.max)
    return out.astype(dtype)
