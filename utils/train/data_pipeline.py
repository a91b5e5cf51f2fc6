"""The method's nutsml/nutsflow pipelines from prepared slices to batches of patches.

Training (the original's ``train_model.py``): per pass, the slices of the split stratified (``STRATIFY_BY``: by
vendor, up-sampled, as the original; by fluid presence; or not at all), shuffled, read as 3-channel images (a B-scan
and its two neighbours) with mask and ROI mask, augmented (the original adds a flipped and a rotated copy; see
:func:`augmented_copies`), cut into patches around the ROI (:func:`utils.train.patch_sampling.ResampledRoiPatches`),
mixed in shuffle buffers, most patches without fluid dropped, and batched as torch tensors normalised to [-1, 1).
With ``BATCHES_PER_EPOCH = 0`` an epoch is one pass (the original); with N, passes follow one another endlessly and
an epoch is N batches. :class:`PatchBatches` runs it in DataLoader worker processes, each (rank, worker, epoch) with
its own seed, so the model does not wait for data and DDP ranks draw different patches.

Validation: ``VAL_BSCANS`` B-scans (all, as the original, or a seeded choice), not augmented; patches without fluid
dropped as in training (the original) or all kept; sampled afresh each epoch (the original) or once and kept in
memory (:func:`validation_batches`).
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Iterable, Iterator, Mapping, NamedTuple

import numpy as np
import pandas as pd
import torch
from nutsflow import Chunk, Filter, Map, Shuffle, nut_processor
from nutsml import Stratify
from scipy.ndimage import affine_transform, map_coordinates
from skimage.transform import rotate

import config
from utils.io import layout
from utils.io.files import read_png
from utils.io.parallel import default_workers
from utils.io.tables import fluid_flag_columns, read_slice_index
from utils.model.input_scale import IMAGE_ORDERS, channel_bscans, normalise_input, scaling_spacing_mm, signal_columns
from utils.train.patch_sampling import ResampledRoiPatches
from utils.stage_settings import settings_from_config

class SliceRecord(NamedTuple):
    """One training or validation B-scan before it is read: a row of the split's slice index
    (:func:`slice_records`). A tuple, so that nutsml's ``Stratify`` can take its label by column."""

    case: str
    root: str  # the case folder relative to WORK_DIR
    z: int  # the B-scan's index in its volume (the ``slice`` column), 0 .. n_slices - 1
    n_slices: int  # B-scans in the volume
    has_fluid: int  # 1 if the B-scan holds any of the fluids, else 0
    spacing_y_mm: float  # the header's axial spacing
    vendor: str


class LoadedSlice(NamedTuple):
    """A B-scan as the pipeline carries it, read (:func:`load_slice`) or cut into a patch
    (:func:`utils.train.patch_sampling.ResampledRoiPatches`, which keeps the class and addresses the fields by
    column: a tuple)."""

    image: np.ndarray  # (H, W, 3) uint8: B-scans z-1, z, z+1 (INPUT_CHANNELS)
    mask: np.ndarray  # (H, W) uint8 labels 0..3 (or IGNORE_LABEL, ignore_blank_columns)
    roi: np.ndarray  # (H, W) uint8 0/1
    is_irf: int  # 1 if the slice (a patch: its inside, away from PATCH_BORDER) holds IRF, else 0
    is_srf: int
    is_ped: int
    scaling_spacing_mm: float  # the axial spacing patches are scaled by (DEPTH_SCALE)


_RECORD_COLUMN = {name: index for index, name in enumerate(SliceRecord._fields)}  # for nutsml's column arguments
_SLICE_COLUMN = {name: index for index, name in enumerate(LoadedSlice._fields)}


@dataclasses.dataclass(frozen=True)
class TrainingDataSettings:
    """What the training and validation pipelines read of the config, built once per run (:meth:`from_config`)
    and given to the functions train.py calls. Each field is the config.py setting of the same name in upper case (see
    config.py for its meaning); the defaults are config.py's, so a test names only what it changes.

    Attributes:
        slice_layout: where the prepared slices are read (the slice folders).
        irf, srf, ped: the label codes a slice's fluid flags test.
        depth_scale, spectralis_axial_spacing_mm: the spacing patches are scaled by
            (:func:`utils.model.input_scale.scaling_spacing_mm`).
        blank_columns_ignored, ignore_label: the A-scans without signal marked out of the targets, with that code
            (:func:`ignore_blank_columns`).
        augment ... speckle_looks: the augmentation (:data:`AUGMENT`, :func:`intensity_augment`).
        patch_shape ... image_resampling: the patches (:func:`utils.train.patch_sampling.ResampledRoiPatches`).
        stratify_by ... drop_partial_batch: the order, mixing, empty-patch drop and batching of the stream.
        val_bscans, val_fresh_patches, drop_empty_in_validation: the validation patches.
    """

    slice_layout: layout.SliceLayout = dataclasses.field(default_factory=layout.SliceLayout)
    irf: int = config.IRF
    srf: int = config.SRF
    ped: int = config.PED
    depth_scale: str = config.DEPTH_SCALE
    spectralis_axial_spacing_mm: float = config.SPECTRALIS_AXIAL_SPACING_MM
    blank_columns_ignored: bool = config.BLANK_COLUMNS_IGNORED
    ignore_label: int = config.IGNORE_LABEL
    augment: str = config.AUGMENT
    flip_prob: float = config.FLIP_PROB
    rotate_prob: float = config.ROTATE_PROB
    rotate_max_degrees: float = config.ROTATE_MAX_DEGREES
    scale_prob: float = config.SCALE_PROB
    scale_range: tuple[float, float] = config.SCALE_RANGE
    scale_anisotropic: bool = config.SCALE_ANISOTROPIC
    elastic_prob: float = config.ELASTIC_PROB
    elastic_max_px: float = config.ELASTIC_MAX_PX
    elastic_grid_px: int = config.ELASTIC_GRID_PX
    intensity_augment: bool = config.INTENSITY_AUGMENT
    intensity_gamma: float = config.INTENSITY_GAMMA
    intensity_contrast: float = config.INTENSITY_CONTRAST
    speckle_looks: float = config.SPECKLE_LOOKS
    patch_shape: tuple[int, int] = config.PATCH_SHAPE
    patches_per_bscan: int = config.PATCHES_PER_BSCAN
    patch_border: int = config.PATCH_BORDER
    random_patch_share: float = config.RANDOM_PATCH_SHARE
    patch_centres: str = config.PATCH_CENTRES
    patch_jitter: float = config.PATCH_JITTER
    patch_jitter_px: int = config.PATCH_JITTER_PX
    image_resampling: str = config.IMAGE_RESAMPLING
    input_channels: str = config.INPUT_CHANNELS
    stratify_by: str = config.STRATIFY_BY
    bscan_shuffle_buffer: int = config.BSCAN_SHUFFLE_BUFFER
    patch_shuffle_buffer: int = config.PATCH_SHUFFLE_BUFFER
    kept_patch_shuffle_buffer: int = config.KEPT_PATCH_SHUFFLE_BUFFER
    empty_patch_drop_prob: float = config.EMPTY_PATCH_DROP_PROB
    batch_size: int = config.BATCH_SIZE
    drop_partial_batch: bool = config.DROP_PARTIAL_BATCH
    val_bscans: int = config.VAL_BSCANS
    val_fresh_patches: bool = config.VAL_FRESH_PATCHES
    drop_empty_in_validation: bool = config.DROP_EMPTY_IN_VALIDATION

    @classmethod
    def from_config(cls, cfg) -> TrainingDataSettings:
        """The training-data settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg, slice_layout=layout.SliceLayout.from_config(cfg))


def read_split_slices(work_dir: str | Path, split: str, split_slices_csv: str, fluids: Mapping[str, int]
                      ) -> pd.DataFrame:
    """The slice-index rows of one split (``WORK_DIR/slices_<split>.csv``), labelled cases only.

    Args:
        work_dir: ``WORK_DIR``, where prepare_data.py wrote the split's slice list.
        split: ``"train"``, ``"val"`` or ``"test"``.
        split_slices_csv: ``SPLIT_SLICES_CSV``, the list's file name with ``{split}`` to fill in.
        fluids: ``FLUIDS``, fluid name -> label code (the ``is_<fluid>`` columns).

    Raises:
        FileNotFoundError: the split's slice list does not exist (prepare_data.py has not run).
    """
    path = Path(work_dir) / split_slices_csv.format(split=split)
    rows = read_slice_index(path, fluids)
    return rows[rows["has_reference"].astype(bool)].reset_index(drop=True)


def slice_records(rows: pd.DataFrame, fluids) -> list[SliceRecord]:
    """A :class:`SliceRecord` per row of a slice index; has_fluid is 0/1 (any of ``fluids``)."""
    has_fluid = (rows[fluid_flag_columns(fluids)].fillna(0).astype(int).sum(axis=1) > 0).astype(int)
    return [SliceRecord(*row) for row in zip(rows["case"], rows["root"], rows["slice"].astype(int),
                                             rows["n_slices"].astype(int), has_fluid,
                                             rows["spacing_y_mm"].astype(float), rows["vendor"])]


def load_slice(record: SliceRecord, work_dir: str | Path, settings: TrainingDataSettings) -> LoadedSlice:
    """Reads one B-scan with its neighbours as channels, its mask and ROI mask.

    Args:
        record: from :func:`slice_records`.
        settings: the slice folders, the fluids' label codes, ``INPUT_CHANNELS``, ``DEPTH_SCALE``,
            ``BLANK_COLUMNS_IGNORED`` and ``IGNORE_LABEL``.

    Returns:
        ``(image (H, W, 3) uint8, mask (H, W) uint8 labels, roi (H, W) uint8 0/1, is_irf, is_srf, is_ped,
        scaling_spacing_mm)``; the channels are B-scans z-1, z, z+1, the edge B-scan repeated at either end (with
        ``INPUT_CHANNELS = "repeat"``: B-scan z three times: :func:`utils.model.input_scale.channel_bscans`); the
        spacing is the one patches are scaled by (``DEPTH_SCALE``: :func:`utils.model.input_scale.scaling_spacing_mm`).
    """
    case, root, z, n_slices = record.case, record.root, record.z, record.n_slices
    slice_layout = settings.slice_layout
    indices = [int(index) for index in channel_bscans(z, n_slices, settings.input_channels)]
    images = {index: read_png(slice_layout.slice_paths(work_dir, root, layout.slice_file_name(case, index))[0])
              for index in dict.fromkeys(indices)}  # each B-scan read once ("repeat": one read)
    channels = [images[index] for index in indices]
    _, mask_path, roi_path = slice_layout.slice_paths(work_dir, root, layout.slice_file_name(case, z))
    mask = read_png(mask_path)
    roi = (read_png(roi_path) > 0).astype(np.uint8)
    flags = [int((mask == code).any()) for code in (settings.irf, settings.srf, settings.ped)]
    spacing = scaling_spacing_mm(record.spacing_y_mm, mask.shape[0], settings.depth_scale,
                                 settings.spectralis_axial_spacing_mm)
    image = np.stack(channels, axis=-1)
    if settings.blank_columns_ignored:
        mask = ignore_blank_columns(image, mask, settings.ignore_label)
    return LoadedSlice(image, mask, roi, *flags, spacing)


def _rotated(sample: LoadedSlice, angle: float, image_order: int) -> LoadedSlice:
    """A loaded slice rotated by ``angle`` degrees about its centre (zeros outside): mask and ROI nearest."""
    image = rotate(sample.image, angle, order=image_order, preserve_range=True, mode="constant").astype(np.uint8)
    mask = rotate(sample.mask, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
    roi = rotate(sample.roi, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
    return sample._replace(image=image, mask=mask, roi=roi)


def _flipped(sample: LoadedSlice) -> LoadedSlice:
    """A loaded slice mirrored left-right (image, mask and ROI together)."""
    return sample._replace(image=np.ascontiguousarray(sample.image[:, ::-1]),
                           mask=np.ascontiguousarray(sample.mask[:, ::-1]),
                           roi=np.ascontiguousarray(sample.roi[:, ::-1]))


def augmented_copies(sample: LoadedSlice, rng: np.random.Generator, flip_prob: float, rotate_prob: float,
                     rotate_max_degrees: float) -> list[LoadedSlice]:
    """The original's augmentation (``train_model.py``: ``AugmentImage`` with ``FLIP`` then ``ROTATE``, each adding
    its output to the stream): the slice itself; with probability ``flip_prob`` (``FLIP_PROB``) also its
    left-right mirror; then for each of those, with probability ``rotate_prob`` (``ROTATE_PROB``), also a copy
    rotated by an angle drawn from ``[0, rotate_max_degrees]`` (``ROTATE_MAX_DEGREES``; nearest neighbour for
    image, mask and ROI, as the original).

    Returns:
        1 to 4 loaded slices (the first is ``sample`` itself); on average ``(1 + flip_prob) * (1 + rotate_prob)``.
    """
    stream = [sample]
    if rng.random() < flip_prob:
        stream.append(_flipped(sample))
    out = []
    for item in stream:
        out.append(item)
        if rng.random() < rotate_prob:
            out.append(_rotated(item, rng.uniform(0.0, rotate_max_degrees), image_order=0))
    return out


def zoomed(array: np.ndarray, zoom: tuple[float, float], order: int) -> np.ndarray:
    """``array`` (H, W) or (H, W, C) magnified about its centre by ``zoom`` = (rows, columns) factors (> 1: larger,
    its edges cut off; < 1: smaller, zeros around it), the same shape and dtype; ``order`` 1 bilinear, 0 nearest."""
    centre = (np.asarray(array.shape[:2], dtype=float) - 1.0) / 2.0
    inverse = 1.0 / np.asarray(zoom, dtype=float)
    if array.ndim == 3:  # the channels are not resampled
        inverse, centre = np.append(inverse, 1.0), np.append(centre, 0.0)
    out = affine_transform(array.astype(np.float32), inverse, offset=centre - inverse * centre, order=order,
                           mode="constant", cval=0.0)
    return np.clip(np.rint(out), 0, 255).astype(array.dtype)


def elastic_displacement(shape: tuple[int, int], rng: np.random.Generator, max_px: float, grid_px: int
                         ) -> np.ndarray:
    """A smooth random displacement field over a ``shape`` = (H, W) B-scan: at control points ``grid_px`` pixels
    apart (the grid spread evenly from edge to edge) each of the two components is uniform in ``[-max_px, max_px]``; between them it is
    interpolated cubically (TorchIO's ``RandomElasticDeformation``).

    Returns:
        (2, H, W) float32: the row and column displacement of each pixel, in pixels.
    """
    points = [max(2, int(np.ceil((size - 1) / grid_px)) + 1) for size in shape]  # the grid spans the B-scan
    coarse = rng.uniform(-max_px, max_px, size=(2, *points))
    # each pixel's place on the control-point grid: the first and last pixels fall on its first and last points
    at = [np.arange(size) * ((n - 1) / max(size - 1, 1)) for size, n in zip(shape, points)]
    where = np.stack(np.meshgrid(*at, indexing="ij"))
    return np.stack([map_coordinates(component, where, order=3, mode="nearest") for component in coarse]
                    ).astype(np.float32)


def elastically_deformed(array: np.ndarray, displacement: np.ndarray, order: int) -> np.ndarray:
    """``array`` (H, W) or (H, W, C) sampled at each pixel plus ``displacement`` (2, H, W) (zeros outside), the same
    shape and dtype; ``order`` 1 bilinear, 0 nearest (labels)."""
    rows, cols = np.meshgrid(np.arange(array.shape[0], dtype=np.float32), np.arange(array.shape[1], dtype=np.float32),
                             indexing="ij")
    coordinates = np.stack([rows + displacement[0], cols + displacement[1]])
    planes = array[..., None] if array.ndim == 2 else array
    out = np.stack([map_coordinates(planes[..., c].astype(np.float32), coordinates, order=order, mode="constant",
                                    cval=0.0) for c in range(planes.shape[-1])], axis=-1)
    out = np.clip(np.rint(out), 0, 255).astype(array.dtype)
    return out[..., 0] if array.ndim == 2 else out


def augment_slice(sample: LoadedSlice, rng: np.random.Generator, flip_prob: float, rotate_prob: float,
                  rotate_max_degrees: float, scale_prob: float, scale_range: tuple[float, float],
                  scale_anisotropic: bool, elastic_prob: float = config.ELASTIC_PROB,
                  elastic_max_px: float = config.ELASTIC_MAX_PX, elastic_grid_px: int = config.ELASTIC_GRID_PX,
                  ) -> LoadedSlice:
    """``AUGMENT = "replace"``: random left-right flip (probability ``flip_prob``) and rotation (``rotate_prob``,
    an angle uniform in ``+-rotate_max_degrees``) of a loaded slice, in place of the original, and beyond it
    (``scale_prob`` > 0) a magnification, its factor log-uniform in ``scale_range``, drawn for depth and width
    independently with ``scale_anisotropic``, then (``elastic_prob`` > 0) an elastic deformation
    (:func:`elastic_displacement`); image bilinear, mask and ROI nearest-neighbour. The arguments are the config.py
    settings of the same names in upper case.

    Returns:
        The augmented slice: image, mask and ROI new arrays of the same shapes and dtypes, the other fields
        ``sample``'s.
    """
    image, mask, roi = sample.image, sample.mask, sample.roi
    if rng.random() < flip_prob:
        image, mask, roi = image[:, ::-1], mask[:, ::-1], roi[:, ::-1]
    if rng.random() < rotate_prob:
        angle = rng.uniform(-rotate_max_degrees, rotate_max_degrees)
        image = rotate(image, angle, order=1, preserve_range=True, mode="constant").astype(np.uint8)
        mask = rotate(mask, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
        roi = rotate(roi, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
    if scale_prob > 0 and rng.random() < scale_prob:
        low, high = np.log(scale_range)
        factors = np.exp(rng.uniform(low, high, size=2 if scale_anisotropic else 1))
        zoom = (float(factors[0]), float(factors[-1]))
        image, mask, roi = zoomed(image, zoom, order=1), zoomed(mask, zoom, order=0), zoomed(roi, zoom, order=0)
    if elastic_prob > 0 and rng.random() < elastic_prob:
        displacement = elastic_displacement(mask.shape, rng, elastic_max_px, elastic_grid_px)
        image = elastically_deformed(image, displacement, order=1)
        mask, roi = elastically_deformed(mask, displacement, order=0), elastically_deformed(roi, displacement, order=0)
    return sample._replace(image=np.ascontiguousarray(image), mask=np.ascontiguousarray(mask),
                           roi=np.ascontiguousarray(roi))


def normalise(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [-1, 1) (:func:`utils.model.input_scale.normalise_input`)."""
    return normalise_input(image.astype(np.float32).transpose(2, 0, 1))


def collate(patches: list[LoadedSlice]) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch samples -> ``(images (B, 3, H, W) float32 in [-1, 1), masks (B, H, W) int64 labels)`` (labels 0..3, or
    ``IGNORE_LABEL`` where :func:`ignore_blank_columns` marked them)."""
    images = torch.from_numpy(np.stack([normalise(patch.image) for patch in patches]))
    masks = torch.from_numpy(np.stack([patch.mask for patch in patches]).astype(np.int64))
    return images, masks


def ignore_blank_columns(image: np.ndarray, mask: np.ndarray, ignore_label: int) -> np.ndarray:
    """``BLANK_COLUMNS_IGNORED``: the mask with ``ignore_label`` (``IGNORE_LABEL``) in the A-scans without signal of
    the B-scan (:func:`utils.model.input_scale.signal_columns` of ``image``'s middle channel), marked as the slice is
    read, so that flips, rotations, intensity augmentation and patch resizing carry the mark with the labels.

    Args:
        image: ``(H, W, 3)`` uint8, the B-scan and its neighbours. mask: ``(H, W)`` uint8 labels.
        ignore_label: the code of the pixels that count nowhere, in ``N_CLASSES..255``.

    Returns:
        A new ``(H, W)`` uint8 mask.
    """
    marked = mask.copy()
    marked[:, ~signal_columns(image[..., 1])[0]] = ignore_label
    return marked


def upsample_by_label(records: list[SliceRecord], label: str, rand: random.Random) -> list[SliceRecord]:
    """One stratified pass: every label group (``label`` names the record field, e.g. ``"vendor"``) up-sampled to
    the size of the largest, shuffled.

    The original stratified by vendor with nutsml's ``Stratify(1, mode='up')``; nutsml 1.2.2's ``Stratify`` only
    down-samples, so the up-sampling is done here: each group's records, shuffled, are repeated (cycling) until
    the group is as large as the largest; the result is shuffled.
    """
    groups: dict = {}
    for record in records:
        groups.setdefault(getattr(record, label), []).append(record)
    size = max((len(group) for group in groups.values()), default=0)
    out = []
    for label in sorted(groups, key=str):
        group = list(groups[label])
        rand.shuffle(group)
        out += [group[i % len(group)] for i in range(size)]
    rand.shuffle(out)
    return out


def _shuffled_records(records: list[SliceRecord], rand: random.Random) -> list[SliceRecord]:
    """``STRATIFY_BY = "none"``: the records in random order."""
    shuffled = list(records)
    rand.shuffle(shuffled)
    return shuffled


def _fluid_stratified(records: list[SliceRecord], rand: random.Random) -> list[SliceRecord]:
    """``STRATIFY_BY = "fluid"``: the records shuffled, then the larger of the groups with and without fluid
    down-sampled at random to about the smaller one's size (nutsml's ``Stratify``)."""
    shuffled = _shuffled_records(records, rand)
    label_counts = pd.Series([record.has_fluid for record in records]).value_counts().to_dict()
    return list(shuffled >> Stratify(_RECORD_COLUMN["has_fluid"], label_counts, rand=rand))


# STRATIFY_BY -> the records of one pass: (records, rand) -> records (names: CHOICES["STRATIFY_BY"], checked there)
STRATIFY_BY = {
    "vendor": lambda records, rand: upsample_by_label(records, "vendor", rand),
    "fluid": _fluid_stratified,
    "none": _shuffled_records,
}


def epoch_records(records: list[SliceRecord], stratify_by: str, rand: random.Random) -> list[SliceRecord]:
    """The training B-scans of one pass, stratified as ``stratify_by`` (``STRATIFY_BY``, a name of
    :data:`STRATIFY_BY`) says and shuffled."""
    return STRATIFY_BY[stratify_by](records, rand)


@nut_processor
def _passes(records: list[SliceRecord], stratify_by: str, rand: random.Random, endless: bool,
            ) -> Iterator[SliceRecord]:
    """The records of one stratified pass, or of pass after pass when ``endless``."""
    records = list(records)
    while records:
        yield from epoch_records(records, stratify_by, rand)
        if not endless:
            return


def intensity_augment(image: np.ndarray, rng: np.random.Generator, gamma: float, contrast: float,
                      speckle_looks: float) -> np.ndarray:
    """Beyond the method (``INTENSITY_AUGMENT``): the look of another device or acquisition, each part with
    probability 0.5, the same for the three channels (neighbouring B-scans of one scan).

    - gamma ``g`` with ``log g`` uniform in ``[-log gamma, log gamma]`` (``INTENSITY_GAMMA``): ``255 (x / 255)^g``;
    - contrast: ``mean + c (x - mean)`` with ``c`` uniform in ``1 +- contrast`` (``INTENSITY_CONTRAST``);
    - speckle-like multiplicative noise: ``x * n`` with ``n`` Gamma-distributed of mean 1 and shape
      ``speckle_looks`` (``SPECKLE_LOOKS``: fully developed speckle averaged over that many looks).

    Args:
        image: ``(H, W, 3)`` uint8.
        gamma: >= 1, the largest gamma (1: none). contrast: in [0, 1). speckle_looks: > 0.

    Returns:
        ``(H, W, 3)`` uint8, a new array.
    """
    out = image.astype(np.float32)
    if rng.random() < 0.5:
        drawn_gamma = float(np.exp(rng.uniform(-1.0, 1.0) * np.log(gamma)))
        out = 255.0 * (out / 255.0) ** drawn_gamma
    if rng.random() < 0.5:
        mean = float(out.mean())
        out = mean + rng.uniform(1.0 - contrast, 1.0 + contrast) * (out - mean)
    if rng.random() < 0.5:
        looks = float(speckle_looks)
        out = out * rng.gamma(looks, 1.0 / looks, size=out.shape[:2])[..., None].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# AUGMENT -> the augmented slices of a loaded slice: (sample, rng, settings) -> list of samples (names:
# CHOICES["AUGMENT"], checked there)
AUGMENT = {
    "rmit": lambda sample, rng, settings: augmented_copies(
        sample, rng, settings.flip_prob, settings.rotate_prob, settings.rotate_max_degrees),
    "replace": lambda sample, rng, settings: [augment_slice(
        sample, rng, settings.flip_prob, settings.rotate_prob, settings.rotate_max_degrees, settings.scale_prob,
        settings.scale_range, settings.scale_anisotropic, settings.elastic_prob, settings.elastic_max_px,
        settings.elastic_grid_px)],
}


@nut_processor
def _augmented(samples: Iterator[LoadedSlice], rng: np.random.Generator, settings: TrainingDataSettings,
               ) -> Iterator[LoadedSlice]:
    """Each loaded slice's augmented copies (:data:`AUGMENT`), each intensity-augmented with ``INTENSITY_AUGMENT``."""
    augment = AUGMENT[settings.augment]
    for sample in samples:
        for copy in augment(sample, rng, settings):
            if settings.intensity_augment:
                copy = copy._replace(image=intensity_augment(copy.image, rng, settings.intensity_gamma,
                                                             settings.intensity_contrast, settings.speckle_looks))
            yield copy


def _has_fluid(patch: LoadedSlice) -> bool:
    return bool(patch.is_irf or patch.is_srf or patch.is_ped)


def _patch_nut(settings: TrainingDataSettings, rng: np.random.Generator):
    """The nut that cuts loaded slices into patch samples (still :class:`LoadedSlice`, its fields by column)."""
    col = _SLICE_COLUMN
    return ResampledRoiPatches(
        pshape=tuple(settings.patch_shape), npos=settings.patches_per_bscan, patch_border=settings.patch_border,
        imagecol=col["image"], maskcol=col["mask"], roicol=col["roi"], IRFcol=col["is_irf"], SRFcol=col["is_srf"],
        PEDcol=col["is_ped"], spacingcol=col["scaling_spacing_mm"],
        random_share=settings.random_patch_share, reference_spacing_mm=settings.spectralis_axial_spacing_mm,
        centres=settings.patch_centres, jitter=settings.patch_jitter, jitter_px=settings.patch_jitter_px, rng=rng,
        image_order=IMAGE_ORDERS[settings.image_resampling], fluid_codes=(settings.irf, settings.srf, settings.ped))


def training_batches(records: list[SliceRecord], work_dir: str | Path, settings: TrainingDataSettings, seed: int,
                     endless: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches from slice records (see module docstring), reproducible for a seed: the stream of
    :class:`PatchBatches`.

    Args:
        settings: the config's (:meth:`TrainingDataSettings.from_config`).
        endless: pass after pass (``BATCHES_PER_EPOCH`` > 0), or one pass (the original's epoch).

    Mixing, as the original's ``train_model.py``: the augmented B-scans pass a shuffle buffer of
    ``BSCAN_SHUFFLE_BUFFER`` (100), their patches one of ``PATCH_SHUFFLE_BUFFER`` (1000) before the empty-patch
    drop, the kept patches one of ``KEPT_PATCH_SHUFFLE_BUFFER`` (0: none, the original's), and a last partial batch
    is dropped when ``DROP_PARTIAL_BATCH``.

    Yields:
        ``(images (BATCH_SIZE, 3, h, w) float32 in [-1, 1), masks (BATCH_SIZE, h, w) int64 0..3)`` (or
        ``IGNORE_LABEL``, :func:`ignore_blank_columns`) with ``(h, w) = PATCH_SHAPE`` (without
        ``DROP_PARTIAL_BATCH`` the last batch of a pass may be smaller).
    """
    rand = random.Random(seed)
    rng = np.random.default_rng(seed)
    keep_empty = 1.0 - settings.empty_patch_drop_prob
    stream = (records >> _passes(settings.stratify_by, rand, endless)
              >> Map(lambda record: load_slice(record, work_dir, settings))
              >> _augmented(rng, settings))
    stream = _shuffled(stream, settings.bscan_shuffle_buffer, rand) >> _patch_nut(settings, rng)
    stream = (_shuffled(stream, settings.patch_shuffle_buffer, rand)
              >> Filter(lambda patch: _has_fluid(patch) or rand.random() < keep_empty))
    return iter(_batched(_shuffled(stream, settings.kept_patch_shuffle_buffer, rand), settings.batch_size,
                         settings.drop_partial_batch))


def _shuffled(stream, buffer_size: int, rand: random.Random):
    """``stream`` shuffled in a buffer of ``buffer_size`` items (nutsflow's ``Shuffle``, as the original); left
    as it is for a size of 0 or 1, without drawing from ``rand``."""
    return stream >> Shuffle(int(buffer_size), rand=rand) if buffer_size > 1 else stream


def _batched(patches, batch_size: int, drop_partial: bool):
    """Patch samples in batches of ``batch_size`` (:func:`collate`), a last partial batch dropped when
    ``drop_partial`` (``DROP_PARTIAL_BATCH``, the original's ``Filter(filter_batch_shape)``)."""
    stream = patches >> Chunk(batch_size, list)
    if drop_partial:
        stream = stream >> Filter(lambda batch: len(batch) == batch_size)
    return stream >> Map(collate)


def choose_validation_records(records: list[SliceRecord], n_bscans: int, seed: int) -> list[SliceRecord]:
    """A fixed choice of ``n_bscans`` validation B-scans: half with fluid where there are enough, sorted; all of
    them (sorted) for ``n_bscans`` 0, as the original."""
    if n_bscans <= 0:
        return sorted(records)
    rng = np.random.default_rng(seed)
    with_fluid = [record for record in records if record.has_fluid]
    without = [record for record in records if not record.has_fluid]
    n_fluid = min(len(with_fluid), max(n_bscans // 2, n_bscans - len(without)))
    n_empty = min(len(without), n_bscans - n_fluid)
    chosen = [with_fluid[i] for i in rng.choice(len(with_fluid), n_fluid, replace=False)]
    chosen += [without[i] for i in rng.choice(len(without), n_empty, replace=False)]
    return sorted(chosen)


def validation_batches(records: list[SliceRecord], work_dir: str | Path, settings: TrainingDataSettings,
                       seed: int = 0, epoch: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The validation patches of ``VAL_BSCANS`` B-scans (0: all, the original; no augmentation), as batches.

    Patches without fluid are dropped with ``EMPTY_PATCH_DROP_PROB`` (seeded) when ``DROP_EMPTY_IN_VALIDATION``
    (the original's validation stream drops them as its training stream does), else all are kept; a last partial
    batch is dropped with ``DROP_PARTIAL_BATCH`` (the original). With ``VAL_FRESH_PATCHES`` (the original) each
    epoch samples its own patches (seeded by ``seed`` and ``epoch``) and the batches stream from disk; without, the
    same patches every epoch, kept in memory (call once). ``settings``: the config's
    (:meth:`TrainingDataSettings.from_config`).

    Returns:
        A generator of batches (fresh patches), or a list of them (fixed patches).
    """
    chosen = choose_validation_records(records, settings.val_bscans, seed)
    fresh = settings.val_fresh_patches
    patch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) if fresh else seed
    rng = np.random.default_rng(patch_seed)
    rand = random.Random(patch_seed)
    keep_empty = 1.0 - settings.empty_patch_drop_prob if settings.drop_empty_in_validation else 1.0
    stream = _batched(chosen >> Map(lambda record: load_slice(record, work_dir, settings))
                      >> _patch_nut(settings, rng)
                      >> Filter(lambda patch: _has_fluid(patch) or rand.random() < keep_empty),
                      settings.batch_size, settings.drop_partial_batch)
    return iter(stream) if fresh else list(stream)


class PatchBatches(torch.utils.data.IterableDataset):
    """The training batch stream (endless, or one pass per iteration) as a dataset for
    ``DataLoader(batch_size=None)``.

    Each DataLoader worker of each DDP rank runs its own pipeline, seeded by
    ``(seed, rank, worker id, epoch index)``, so ranks and workers draw different patches and a resumed run
    does not replay the patches of its first epochs. Endless: one stream, epoch index ``start_epoch``. One pass
    (``endless=False``): each iteration is the next pass, the k-th (from 0) drawing epoch ``start_epoch + k + 1``'s
    patches; each worker counts the passes of its own copy, so one DataLoader with persistent workers serves every
    epoch and its workers start once per run, not once per epoch (on a GPU machine their start took 11 s of each
    14-second epoch of the authors' network).
    """

    def __init__(self, records: list[SliceRecord], work_dir: str | Path, settings: TrainingDataSettings, seed: int,
                 rank: int = 0, start_epoch: int = 0, endless: bool = True):
        super().__init__()
        self.records, self.work_dir, self.settings = records, str(work_dir), settings
        self.seed, self.rank, self.start_epoch, self.endless = seed, rank, start_epoch, endless
        self.passes_started = 0  # one-pass mode: iterations begun (in a worker: of that worker's copy)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        epoch_index = self.start_epoch
        if not self.endless:
            epoch_index += self.passes_started
            self.passes_started += 1
        seed = int(np.random.SeedSequence([self.seed, self.rank, worker, epoch_index]).generate_state(1)[0])
        if not self.endless:  # one pass per worker: each worker takes every n-th B-scan of the split
            n = info.num_workers if info else 1
            return training_batches(self.records[worker::n], self.work_dir, self.settings, seed, endless=False)
        return training_batches(self.records, self.work_dir, self.settings, seed, endless=True)


def loader_workers(requested: int, device_type: str, processes_per_node: int = 1) -> int:
    """DataLoader worker processes: ``requested`` (``LOADER_WORKERS``) when >= 0, or with -1 the automatic choice
    (see config.py): 0 off CUDA; on CUDA the cores per process (of ``processes_per_node`` on this node) less one,
    clipped to 1..8."""
    if requested >= 0:
        return requested
    if device_type != "cuda":
        return 0
    return max(1, min(8, default_workers() // max(1, processes_per_node) - 1))


def training_loader(records: list[SliceRecord], work_dir: str | Path, settings: TrainingDataSettings, seed: int,
                    rank: int = 0, start_epoch: int = 0, workers: int = 0, endless: bool = True,
                    ) -> torch.utils.data.DataLoader:
    """A DataLoader over :class:`PatchBatches` (with the config's ``settings``) running the pipeline in ``workers``
    processes (0: in this one; worker processes are started once and kept for the loader's life); endless, or one
    pass per iteration (epochs ``start_epoch + 1``, ``+ 2``, ...)."""
    return torch.utils.data.DataLoader(
        PatchBatches(records, work_dir, settings, seed, rank, start_epoch, endless), batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        multiprocessing_context="spawn" if workers > 0 else None)
