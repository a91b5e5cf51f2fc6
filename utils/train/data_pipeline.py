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

import random
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import torch
from nutsflow import Chunk, Filter, Map, Shuffle, nut_processor
from nutsml import Stratify
from scipy.ndimage import affine_transform
from skimage.transform import rotate

import config
from utils.io import layout
from utils.io.files import read_png
from utils.io.parallel import default_workers
from utils.io.tables import fluid_flag_columns, read_slice_index
from utils.model.input_scale import IMAGE_ORDERS, normalise_input, scaling_spacing_mm, signal_columns
from utils.train.patch_sampling import ResampledRoiPatches

# Columns of a slice sample before loading: (case, root, slice, n_slices, has_fluid, spacing_y_mm, vendor)
# and after loading: (image HxWx3 uint8, mask HxW uint8, roi HxW uint8, is_IRF, is_SRF, is_PED, the spacing in mm
# patches are scaled by).
IMAGE, MASK, ROI, IS_IRF, IS_SRF, IS_PED, SPACING = range(7)
RECORD_HAS_FLUID, RECORD_VENDOR = 4, 6


def read_split_slices(work_dir: str | Path, split: str, cfg) -> pd.DataFrame:
    """The slice-index rows of one split (``WORK_DIR/slices_<split>.csv``), labelled cases only.

    Raises:
        FileNotFoundError: the split's slice list does not exist (prepare_data.py has not run).
    """
    path = Path(work_dir) / cfg.SPLIT_SLICES_CSV.format(split=split)
    rows = read_slice_index(path, cfg.FLUIDS)
    return rows[rows["has_reference"].astype(bool)].reset_index(drop=True)


def slice_records(rows: pd.DataFrame, fluids) -> list[tuple]:
    """``(case, root, slice, n_slices, has_fluid, spacing_y_mm, vendor)`` per row; has_fluid is 0/1 (any of
    ``fluids``)."""
    has_fluid = (rows[fluid_flag_columns(fluids)].fillna(0).astype(int).sum(axis=1) > 0).astype(int)
    return list(zip(rows["case"], rows["root"], rows["slice"].astype(int), rows["n_slices"].astype(int),
                    has_fluid, rows["spacing_y_mm"].astype(float), rows["vendor"]))


def load_slice(record: tuple, work_dir: str | Path, cfg) -> tuple:
    """Reads one B-scan with its neighbours as channels, its mask and ROI mask.

    Args:
        record: from :func:`slice_records`.

    Returns:
        ``(image (H, W, 3) uint8, mask (H, W) uint8 labels, roi (H, W) uint8 0/1, is_IRF, is_SRF, is_PED,
        spacing_y_mm)``; the channels are B-scans z-1, z, z+1, the edge B-scan repeated at either end; the spacing
        is the one patches are scaled by (``DEPTH_SCALE``: :func:`utils.model.input_scale.scaling_spacing_mm`).
    """
    case, root, z, n_slices, _, spacing = record[:6]
    channels = []
    for neighbour in (max(z - 1, 0), z, min(z + 1, n_slices - 1)):
        image_path, _, _ = layout.slice_paths(work_dir, root, layout.slice_file_name(case, neighbour), cfg)
        channels.append(read_png(image_path))
    _, mask_path, roi_path = layout.slice_paths(work_dir, root, layout.slice_file_name(case, z), cfg)
    mask = read_png(mask_path)
    roi = (read_png(roi_path) > 0).astype(np.uint8)
    flags = [int((mask == code).any()) for code in (cfg.IRF, cfg.SRF, cfg.PED)]
    spacing = scaling_spacing_mm(spacing, mask.shape[0], cfg.DEPTH_SCALE, cfg.SPECTRALIS_AXIAL_SPACING_MM)
    image = np.stack(channels, axis=-1)
    if cfg.BLANK_COLUMNS_IGNORED:
        mask = ignore_blank_columns(image, mask)
    return (image, mask, roi, *flags, spacing)


def _rotated(sample: tuple, angle: float, image_order: int) -> tuple:
    """A loaded slice rotated by ``angle`` degrees about its centre (zeros outside): mask and ROI nearest."""
    image, mask, roi = sample[IMAGE], sample[MASK], sample[ROI]
    image = rotate(image, angle, order=image_order, preserve_range=True, mode="constant").astype(np.uint8)
    mask = rotate(mask, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
    roi = rotate(roi, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
    return (image, mask, roi, *sample[3:])


def _flipped(sample: tuple) -> tuple:
    """A loaded slice mirrored left-right (image, mask and ROI together)."""
    return (np.ascontiguousarray(sample[IMAGE][:, ::-1]), np.ascontiguousarray(sample[MASK][:, ::-1]),
            np.ascontiguousarray(sample[ROI][:, ::-1]), *sample[3:])


def augmented_copies(sample: tuple, rng: np.random.Generator, cfg) -> list[tuple]:
    """The original's augmentation (``train_model.py``: ``AugmentImage`` with ``FLIP`` then ``ROTATE``, each adding
    its output to the stream): the slice itself; with probability ``FLIP_PROB`` also its left-right mirror; then
    for each of those, with probability ``ROTATE_PROB``, also a copy rotated by an angle drawn from
    ``[0, ROTATE_MAX_DEGREES]`` (nearest neighbour for image, mask and ROI, as the original).

    Returns:
        1 to 4 loaded slices (the first is ``sample`` itself); on average ``(1 + FLIP_PROB) * (1 + ROTATE_PROB)``.
    """
    stream = [sample]
    if rng.random() < cfg.FLIP_PROB:
        stream.append(_flipped(sample))
    out = []
    for item in stream:
        out.append(item)
        if rng.random() < cfg.ROTATE_PROB:
            out.append(_rotated(item, rng.uniform(0.0, cfg.ROTATE_MAX_DEGREES), image_order=0))
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


def augment_slice(sample: tuple, rng: np.random.Generator, cfg) -> tuple:
    """``AUGMENT = "replace"``: random left-right flip and rotation of a loaded slice, in place of the original,
    and beyond it (``SCALE_PROB`` > 0) a magnification, its factor log-uniform in ``SCALE_RANGE``, drawn for depth
    and width independently with ``SCALE_ANISOTROPIC`` (image bilinear, mask and ROI nearest-neighbour)."""
    image, mask, roi = sample[IMAGE], sample[MASK], sample[ROI]
    if rng.random() < cfg.FLIP_PROB:
        image, mask, roi = image[:, ::-1], mask[:, ::-1], roi[:, ::-1]
    if rng.random() < cfg.ROTATE_PROB:
        angle = rng.uniform(-cfg.ROTATE_MAX_DEGREES, cfg.ROTATE_MAX_DEGREES)
        image = rotate(image, angle, order=1, preserve_range=True, mode="constant").astype(np.uint8)
        mask = rotate(mask, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
        roi = rotate(roi, angle, order=0, preserve_range=True, mode="constant").astype(np.uint8)
    if cfg.SCALE_PROB > 0 and rng.random() < cfg.SCALE_PROB:
        low, high = np.log(cfg.SCALE_RANGE)
        factors = np.exp(rng.uniform(low, high, size=2 if cfg.SCALE_ANISOTROPIC else 1))
        zoom = (float(factors[0]), float(factors[-1]))
        image, mask, roi = zoomed(image, zoom, order=1), zoomed(mask, zoom, order=0), zoomed(roi, zoom, order=0)
    return (np.ascontiguousarray(image), np.ascontiguousarray(mask), np.ascontiguousarray(roi), *sample[3:])


def normalise(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [-1, 1) (:func:`utils.model.input_scale.normalise_input`)."""
    return normalise_input(image.astype(np.float32).transpose(2, 0, 1))


def collate(patches: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """Patch samples -> ``(images (B, 3, H, W) float32 in [-1, 1), masks (B, H, W) int64 labels)`` (labels 0..3, or
    ``config.IGNORE_LABEL`` where :func:`ignore_blank_columns` marked them)."""
    images = torch.from_numpy(np.stack([normalise(patch[IMAGE]) for patch in patches]))
    masks = torch.from_numpy(np.stack([patch[MASK] for patch in patches]).astype(np.int64))
    return images, masks


def ignore_blank_columns(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``BLANK_COLUMNS_IGNORED``: the mask with ``config.IGNORE_LABEL`` in the A-scans without signal of the B-scan
    (:func:`utils.model.input_scale.signal_columns` of ``image``'s middle channel), marked as the slice is read, so
    that flips, rotations, intensity augmentation and patch resizing carry the mark with the labels.

    Args:
        image: ``(H, W, 3)`` uint8, the B-scan and its neighbours. mask: ``(H, W)`` uint8 labels.

    Returns:
        A new ``(H, W)`` uint8 mask.
    """
    marked = mask.copy()
    marked[:, ~signal_columns(image[..., 1])[0]] = config.IGNORE_LABEL
    return marked


def upsample_by_label(records: list[tuple], label_col: int, rand: random.Random) -> list[tuple]:
    """One stratified pass: every label group (e.g. vendor) up-sampled to the size of the largest, shuffled.

    The original stratified by vendor with nutsml's ``Stratify(1, mode='up')``; nutsml 1.2.2's ``Stratify`` only
    down-samples, so the up-sampling is done here: each group's records, shuffled, are repeated (cycling) until
    the group is as large as the largest; the result is shuffled.
    """
    groups: dict = {}
    for record in records:
        groups.setdefault(record[label_col], []).append(record)
    size = max((len(group) for group in groups.values()), default=0)
    out = []
    for label in sorted(groups, key=str):
        group = list(groups[label])
        rand.shuffle(group)
        out += [group[i % len(group)] for i in range(size)]
    rand.shuffle(out)
    return out


def _shuffled_records(records: list[tuple], rand: random.Random) -> list[tuple]:
    """``STRATIFY_BY = "none"``: the records in random order."""
    shuffled = list(records)
    rand.shuffle(shuffled)
    return shuffled


def _fluid_stratified(records: list[tuple], rand: random.Random) -> list[tuple]:
    """``STRATIFY_BY = "fluid"``: the records shuffled, then the larger of the groups with and without fluid
    down-sampled at random to about the smaller one's size (nutsml's ``Stratify``)."""
    shuffled = _shuffled_records(records, rand)
    label_counts = pd.Series([record[RECORD_HAS_FLUID] for record in records]).value_counts().to_dict()
    return list(shuffled >> Stratify(RECORD_HAS_FLUID, label_counts, rand=rand))


# STRATIFY_BY -> the records of one pass: (records, rand) -> records (names: CHOICES["STRATIFY_BY"], checked there)
STRATIFY_BY = {
    "vendor": lambda records, rand: upsample_by_label(records, RECORD_VENDOR, rand),
    "fluid": _fluid_stratified,
    "none": _shuffled_records,
}


def epoch_records(records: list[tuple], cfg, rand: random.Random) -> list[tuple]:
    """The training B-scans of one pass, stratified as ``STRATIFY_BY`` says and shuffled (:data:`STRATIFY_BY`)."""
    return STRATIFY_BY[cfg.STRATIFY_BY](records, rand)


@nut_processor
def _passes(records: list[tuple], cfg, rand: random.Random, endless: bool) -> Iterator[tuple]:
    """The records of one stratified pass, or of pass after pass when ``endless``."""
    records = list(records)
    while records:
        yield from epoch_records(records, cfg, rand)
        if not endless:
            return


def intensity_augment(image: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """Beyond the method (``INTENSITY_AUGMENT``): the look of another device or acquisition, each part with
    probability 0.5, the same for the three channels (neighbouring B-scans of one scan).

    - gamma ``g`` with ``log g`` uniform in ``[-log INTENSITY_GAMMA, log INTENSITY_GAMMA]``: ``255 (x / 255)^g``;
    - contrast: ``mean + c (x - mean)`` with ``c`` uniform in ``1 +- INTENSITY_CONTRAST``;
    - speckle-like multiplicative noise: ``x * n`` with ``n`` Gamma-distributed of mean 1 and shape
      ``SPECKLE_LOOKS`` (fully developed speckle averaged over that many looks).

    Args:
        image: ``(H, W, 3)`` uint8.

    Returns:
        ``(H, W, 3)`` uint8, a new array.
    """
    out = image.astype(np.float32)
    if rng.random() < 0.5:
        gamma = float(np.exp(rng.uniform(-1.0, 1.0) * np.log(cfg.INTENSITY_GAMMA)))
        out = 255.0 * (out / 255.0) ** gamma
    if rng.random() < 0.5:
        mean = float(out.mean())
        out = mean + rng.uniform(1.0 - cfg.INTENSITY_CONTRAST, 1.0 + cfg.INTENSITY_CONTRAST) * (out - mean)
    if rng.random() < 0.5:
        looks = float(cfg.SPECKLE_LOOKS)
        out = out * rng.gamma(looks, 1.0 / looks, size=out.shape[:2])[..., None].astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# AUGMENT -> the augmented slices of a loaded slice: (sample, rng, cfg) -> list of samples (names:
# CHOICES["AUGMENT"], checked there)
AUGMENT = {
    "rmit": augmented_copies,
    "replace": lambda sample, rng, cfg: [augment_slice(sample, rng, cfg)],
}


@nut_processor
def _augmented(samples: Iterator[tuple], rng: np.random.Generator, cfg) -> Iterator[tuple]:
    """Each loaded slice's augmented copies (:data:`AUGMENT`), each intensity-augmented with ``INTENSITY_AUGMENT``."""
    augment = AUGMENT[cfg.AUGMENT]
    for sample in samples:
        for copy in augment(sample, rng, cfg):
            if cfg.INTENSITY_AUGMENT:
                copy = (intensity_augment(copy[IMAGE], rng, cfg), *copy[1:])
            yield copy


def _has_fluid(patch: tuple) -> bool:
    return bool(patch[IS_IRF] or patch[IS_SRF] or patch[IS_PED])


def _patch_nut(cfg, rng: np.random.Generator):
    return ResampledRoiPatches(
        pshape=tuple(cfg.PATCH_SHAPE), npos=cfg.PATCHES_PER_BSCAN, patch_border=cfg.PATCH_BORDER,
        imagecol=IMAGE, maskcol=MASK, roicol=ROI, IRFcol=IS_IRF, SRFcol=IS_SRF, PEDcol=IS_PED, spacingcol=SPACING,
        random_share=cfg.RANDOM_PATCH_SHARE, reference_spacing_mm=cfg.SPECTRALIS_AXIAL_SPACING_MM,
        centres=cfg.PATCH_CENTRES, jitter=cfg.PATCH_JITTER, jitter_px=cfg.PATCH_JITTER_PX, rng=rng,
        image_order=IMAGE_ORDERS[cfg.IMAGE_RESAMPLING])


def training_batches(records: list[tuple], work_dir: str | Path, cfg, seed: int, endless: bool = True,
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Training batches from slice records (see module docstring), reproducible for a seed.

    Args:
        endless: pass after pass (``BATCHES_PER_EPOCH`` > 0), or one pass (the original's epoch).

    Mixing, as the original's ``train_model.py``: the augmented B-scans pass a shuffle buffer of
    ``BSCAN_SHUFFLE_BUFFER`` (100), their patches one of ``PATCH_SHUFFLE_BUFFER`` (1000) before the empty-patch
    drop, the kept patches one of ``KEPT_PATCH_SHUFFLE_BUFFER`` (0: none; the pipeline's earlier mixing: 4 x
    ``BATCH_SIZE`` here and nothing before), and a last partial batch is dropped when ``DROP_PARTIAL_BATCH``.

    Yields:
        ``(images (BATCH_SIZE, 3, h, w) float32 in [-1, 1), masks (BATCH_SIZE, h, w) int64 0..3)`` (or
        ``IGNORE_LABEL``, :func:`ignore_blank_columns`) with ``(h, w) = cfg.PATCH_SHAPE`` (without
        ``DROP_PARTIAL_BATCH`` the last batch of a pass may be smaller).
    """
    rand = random.Random(seed)
    rng = np.random.default_rng(seed)
    keep_empty = 1.0 - cfg.EMPTY_PATCH_DROP_PROB
    stream = (records >> _passes(cfg, rand, endless)
              >> Map(lambda record: load_slice(record, work_dir, cfg))
              >> _augmented(rng, cfg))
    stream = _shuffled(stream, cfg.BSCAN_SHUFFLE_BUFFER, rand) >> _patch_nut(cfg, rng)
    stream = (_shuffled(stream, cfg.PATCH_SHUFFLE_BUFFER, rand)
              >> Filter(lambda patch: _has_fluid(patch) or rand.random() < keep_empty))
    return iter(_batched(_shuffled(stream, cfg.KEPT_PATCH_SHUFFLE_BUFFER, rand), cfg))


def _shuffled(stream, buffer_size: int, rand: random.Random):
    """``stream`` shuffled in a buffer of ``buffer_size`` items (nutsflow's ``Shuffle``, as the original); left
    as it is for a size of 0 or 1, without drawing from ``rand``."""
    return stream >> Shuffle(int(buffer_size), rand=rand) if buffer_size > 1 else stream


def _batched(patches, cfg):
    """Patch samples in batches of ``BATCH_SIZE`` (:func:`collate`), a last partial batch dropped when
    ``DROP_PARTIAL_BATCH`` (the original's ``Filter(filter_batch_shape)``)."""
    stream = patches >> Chunk(cfg.BATCH_SIZE, list)
    if cfg.DROP_PARTIAL_BATCH:
        stream = stream >> Filter(lambda batch: len(batch) == cfg.BATCH_SIZE)
    return stream >> Map(collate)


def choose_validation_records(records: list[tuple], n_bscans: int, seed: int) -> list[tuple]:
    """A fixed choice of ``n_bscans`` validation B-scans: half with fluid where there are enough, sorted; all of
    them (sorted) for ``n_bscans`` 0, as the original."""
    if n_bscans <= 0:
        return sorted(records)
    rng = np.random.default_rng(seed)
    with_fluid = [record for record in records if record[4]]
    without = [record for record in records if not record[4]]
    n_fluid = min(len(with_fluid), max(n_bscans // 2, n_bscans - len(without)))
    n_empty = min(len(without), n_bscans - n_fluid)
    chosen = [with_fluid[i] for i in rng.choice(len(with_fluid), n_fluid, replace=False)]
    chosen += [without[i] for i in rng.choice(len(without), n_empty, replace=False)]
    return sorted(chosen)


def validation_batches(records: list[tuple], work_dir: str | Path, cfg, seed: int = 0, epoch: int = 0,
                       ) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    """The validation patches of ``VAL_BSCANS`` B-scans (0: all, the original; no augmentation), as batches.

    Patches without fluid are dropped with ``EMPTY_PATCH_DROP_PROB`` (seeded) when ``DROP_EMPTY_IN_VALIDATION``
    (the original's validation stream drops them as its training stream does), else all are kept; a last partial
    batch is dropped with ``DROP_PARTIAL_BATCH`` (the original). With ``VAL_FRESH_PATCHES`` (the original) each
    epoch samples its own patches (seeded by ``seed`` and ``epoch``) and the batches stream from disk; without, the
    same patches every epoch, kept in memory (call once).

    Returns:
        A generator of batches (fresh patches), or a list of them (fixed patches).
    """
    chosen = choose_validation_records(records, cfg.VAL_BSCANS, seed)
    patch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]) if cfg.VAL_FRESH_PATCHES else seed
    rng = np.random.default_rng(patch_seed)
    rand = random.Random(patch_seed)
    keep_empty = 1.0 - cfg.EMPTY_PATCH_DROP_PROB if cfg.DROP_EMPTY_IN_VALIDATION else 1.0
    stream = _batched(chosen >> Map(lambda record: load_slice(record, work_dir, cfg)) >> _patch_nut(cfg, rng)
                      >> Filter(lambda patch: _has_fluid(patch) or rand.random() < keep_empty), cfg)
    return iter(stream) if cfg.VAL_FRESH_PATCHES else list(stream)


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

    def __init__(self, records: list[tuple], work_dir: str | Path, cfg, seed: int, rank: int = 0,
                 start_epoch: int = 0, endless: bool = True):
        super().__init__()
        self.records, self.work_dir, self.cfg = records, str(work_dir), cfg
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
            return training_batches(self.records[worker::n], self.work_dir, self.cfg, seed, endless=False)
        return training_batches(self.records, self.work_dir, self.cfg, seed)


def loader_workers(cfg, device_type: str, processes_per_node: int = 1) -> int:
    """DataLoader worker processes: ``cfg.LOADER_WORKERS``, or with -1 the automatic choice (see config.py)."""
    if cfg.LOADER_WORKERS >= 0:
        return cfg.LOADER_WORKERS
    if device_type != "cuda":
        return 0
    return max(1, min(8, default_workers() // max(1, processes_per_node) - 1))


def training_loader(records: list[tuple], work_dir: str | Path, cfg, seed: int, rank: int = 0,
                    start_epoch: int = 0, workers: int = 0, endless: bool = True) -> torch.utils.data.DataLoader:
    """A DataLoader over :class:`PatchBatches` running the pipeline in ``workers`` processes (0: in this one;
    worker processes are started once and kept for the loader's life); endless, or one pass per iteration (epochs
    ``start_epoch + 1``, ``+ 2``, ...)."""
    return torch.utils.data.DataLoader(
        PatchBatches(records, work_dir, cfg, seed, rank, start_epoch, endless), batch_size=None, num_workers=workers,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
        multiprocessing_context="spawn" if workers > 0 else None)
