"""Patch sampling for training, as nuts-ml nuts: ROI-centred patches of B-scans, resampled to one physical depth.

Follows the authors' ``custom_nuts.py`` (RuwanT/retouch): ``sample_oct_patch_centers`` (here
:func:`band_middle_patch_centers`), ``sample_patches_entropy_mask`` (:func:`roi_patches`) and the nut
``ImagePatchesByMaskRetouch_resampled`` (:func:`ResampledRoiPatches`, also importable under the original's name).

A sample of the training stream is one B-scan with its labels and ROI (the retina band found by its entropy, see
``prepare_data.py``'s ``roi`` step). :func:`ResampledRoiPatches` turns each sample into several patch samples:

- ``npos`` patches centred in the middle of the ROI band: by default as the original, at columns drawn from every
  10th column (:func:`band_middle_patch_centers`), or stratified across the width (:func:`stratified_patch_centers`);
- ``int(npos * random_share)`` patches centred on random ROI pixels (the original added these, 20 %, through
  nuts-ml's ``sample_patch_centers``).

Each patch spans the same depth on every vendor: it is cropped ``PATCH_SHAPE[0] * reference spacing / the volume's
scaling spacing`` rows high (``DEPTH_SCALE``: :func:`utils.model.input_scale.scaling_spacing_mm`), then resized to
``PATCH_SHAPE``. Flags say which fluids lie inside the patch away from its border.

Conventions: a B-scan is ``(H, W)`` or ``(H, W, C)`` (rows = depth, columns = A-scans); a patch shape is
``(height, width)``; a centre is ``(row, col)`` and the patch of shape ``(h, w)`` around it covers rows
``row - h // 2 .. row - h // 2 + h - 1`` (the convention of nuts-ml's ``extract_patch``).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np
from nutsflow import nut_processor

import config
from utils.model.input_scale import check_patch_shape, physical_patch_shape, resize_patch

FLUID_CODES = (config.IRF, config.SRF, config.PED)  # the default codes of the flags, in the order they are returned

RngLike = np.random.Generator | int | None


def pad_to_shape(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` zero-padded at the bottom and right to at least ``shape`` rows and columns.

    Args:
        array: ``(H, W)`` or ``(H, W, C)``, any dtype.
        shape: ``(height, width)`` the result must at least have.

    Returns:
        ``array`` itself if it is large enough, else a padded copy of shape ``(max(H, height), max(W, width), ...)``
        and the same dtype; existing pixels keep their ``(row, col)``.
    """
    pad_r, pad_c = max(0, shape[0] - array.shape[0]), max(0, shape[1] - array.shape[1])
    if not pad_r and not pad_c:
        return array
    return np.pad(array, [(0, pad_r), (0, pad_c)] + [(0, 0)] * (array.ndim - 2))


def crop_patch(array: np.ndarray, center: Sequence[int], shape: Sequence[int]) -> np.ndarray:
    """The ``shape`` patch of ``array`` around ``center`` (a view, no copy).

    Args:
        array: ``(H, W)`` or ``(H, W, C)``, any dtype.
        center: ``(row, col)``; the patch covers rows ``row - h // 2`` to ``row - h // 2 + h - 1``, same for columns.
        shape: ``(h, w)`` in pixels.

    Returns:
        ``(h, w)`` or ``(h, w, C)`` view of ``array``, same dtype.

    Raises:
        ValueError: the patch would reach outside ``array`` (clamp the centre, or pad with :func:`pad_to_shape`).
    """
    h, w = check_patch_shape(shape, "shape")
    r0, c0 = int(center[0]) - h // 2, int(center[1]) - w // 2
    if r0 < 0 or c0 < 0 or r0 + h > array.shape[0] or c0 + w > array.shape[1]:
        raise ValueError(f"a {h}x{w} patch centred at {tuple(center)} reaches outside the {array.shape[:2]} array; "
                         f"clamp the centre with clamp_centers() or pad the array with pad_to_shape()")
    return array[r0:r0 + h, c0:c0 + w]


def clamp_centers(centers: np.ndarray, image_shape: Sequence[int], pshape: Sequence[int]) -> np.ndarray:
    """Centres moved the least so that their ``pshape`` patch lies inside an image of ``image_shape``.

    Args:
        centers: ``(n, 2)`` int ``(row, col)``.
        image_shape: ``(H, W, ...)``, at least ``pshape``.
        pshape: ``(h, w)``.

    Returns:
        ``(n, 2)`` int64 centres with ``h // 2 <= row <= H - h + h // 2`` and likewise for columns.
    """
    h, w = pshape
    lo = np.array([h // 2, w // 2])
    hi = np.array([image_shape[0] - h + h // 2, image_shape[1] - w + w // 2])
    return np.clip(np.asarray(centers, dtype=np.int64).reshape(-1, 2), lo, hi)



def fluid_flags(mask_patch: np.ndarray, border: int, codes: Sequence[int] = FLUID_CODES) -> tuple[int, ...]:
    """Which labels occur in a mask patch once ``border`` pixels are ignored on each side.

    Args:
        mask_patch: ``(h, w)`` integer labels (0 background, ``config.IRF``/``SRF``/``PED``).
        border: pixels ignored at each side, ``0 <= border`` and ``2 * border < min(h, w)``; fluid cut by the patch
            edge is often a sliver the network cannot recognise, so it does not count.
        codes: the labels to report, by default ``(IRF, SRF, PED)``.

    Returns:
        One int per code: 1 if ``np.any(mask_patch[border:h - border, border:w - border] == code)``, else 0.

    Raises:
        ValueError: a negative border, or one that leaves no pixel.
    """
    h, w = mask_patch.shape[:2]
    if border < 0 or 2 * border >= min(h, w):
        raise ValueError(f"patch border {border} must be >= 0 and leave pixels inside a {h}x{w} patch "
                         f"(2 * border < {min(h, w)})")
    inner = np.asarray(mask_patch[border:h - border, border:w - border])
    present = np.zeros(max(max(codes), int(inner.max())) + 1, dtype=bool)  # labels are small non-negative ints
    present[inner.ravel()] = True
    return tuple(int(present[c]) for c in codes)


# ----------------------------------------------------------------------------------------------------------------
# Sampling patch centres
# ----------------------------------------------------------------------------------------------------------------
def _band_extent(roi: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last ROI row of each of ``cols`` (columns that hold ROI): two ``(k,)`` int arrays."""
    # Only on the chosen columns: argmax down every column of a 1024x512 B-scan takes ~0.5 ms, 25x an any().
    band = roi[:, cols]
    return band.argmax(axis=0), roi.shape[0] - 1 - band[::-1].argmax(axis=0)


def _check_roi(roimask: np.ndarray, pos: int, pshape: tuple[int, int]) -> np.ndarray:
    """``roimask == pos`` as a bool ``(H, W)`` array at least ``pshape``, or ValueError."""
    roi = np.asarray(roimask) == pos
    if roi.ndim != 2:
        raise ValueError(f"roimask must be a 2-D (H, W) mask, got shape {roi.shape}")
    if roi.shape[0] < pshape[0] or roi.shape[1] < pshape[1]:
        raise ValueError(f"roimask {roi.shape} is smaller than the patch {pshape}; pad it with pad_to_shape()")
    return roi


def _check_counts(**values: float) -> None:
    """The one check of the sampler's counts and shares: each must be >= 0."""
    negative = {name: value for name, value in values.items() if not value >= 0}
    if negative:
        raise ValueError(f"{', '.join(values)} must be >= 0, got "
                         f"{', '.join(f'{name}={value!r}' for name, value in negative.items())}")


COLUMN_STEP = 10  # the original draws centre columns from every 10th column


def band_middle_patch_centers(roimask: np.ndarray, pshape: Sequence[int], npos: int, pos: int = 1,
                              rng: RngLike = None, jitter_px: int = 10) -> np.ndarray:
    """The original's ``sample_oct_patch_centers`` (RuwanT/retouch ``custom_nuts.py``): centres in the middle of
    the retina at columns drawn from every 10th column.

    Candidate columns are ``w // 2, w // 2 + 10, ...`` up to where a centred patch still fits; ``2 * npos`` of them
    are drawn without replacement (all when there are fewer) in random order, and the first ``npos`` that hold
    ROI are kept. The row is ``int(first + (last - first) / 2 + u)`` with ``u`` uniform in [0, 1) (the middle of
    the column's ROI, randomly rounded) plus an integer offset from ``[-jitter_px, jitter_px)``, in the B-scan's
    own pixels; centres are then clamped so the patch lies in the image (the original clamps one row further in).

    Args:
        roimask: ``(H, W)`` ROI mask (uint8 or bool), at least ``pshape``.
        pshape: ``(h, w)`` patch (crop) shape in pixels.
        npos: number of centres wanted, >= 0.
        pos: ROI mask value inside the retina.
        rng: numpy Generator, or a seed for one.
        jitter_px: row offsets are drawn from ``[-jitter_px, jitter_px)`` (the original: 10).

    Returns:
        ``(n, 2)`` int64 ``(row, col)`` centres, ``n <= npos`` (fewer when fewer candidate columns hold ROI).

    Raises:
        ValueError: ``roimask`` not 2-D or smaller than ``pshape``, negative ``npos`` or ``jitter_px``.
    """
    h, w = check_patch_shape(pshape)
    roi = _check_roi(roimask, pos, (h, w))
    _check_counts(npos=npos, jitter_px=jitter_px)
    rng = np.random.default_rng(rng)
    candidates = np.arange(w // 2, roi.shape[1] - w // 2, COLUMN_STEP)
    if npos == 0 or candidates.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    drawn = rng.choice(candidates, size=min(2 * npos, candidates.size), replace=False)
    cols = drawn[roi[:, drawn].any(axis=0)][:npos]
    if cols.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    first, last = _band_extent(roi, cols)
    rows = (first + (last - first) / 2 + rng.random(cols.size)).astype(np.int64)
    rows += rng.integers(-jitter_px, jitter_px, size=cols.size) if jitter_px else 0
    return clamp_centers(np.stack([rows, cols], axis=1), roi.shape, (h, w))


def stratified_patch_centers(roimask: np.ndarray, pshape: Sequence[int], npos: int, pos: int = 1,
                             rng: RngLike = None, jitter: float = 0.1) -> np.ndarray:
    """``PATCH_CENTRES = "stratified"``: patch centres in the middle of the retina, spread across the B-scan width.

    The columns are stratified: the ROI columns where a centred patch fits in the image are cut into ``npos``
    equal runs and one column is drawn at random from each, so the patches cover the whole width. The row is the
    midpoint of the first and last ROI pixel of that column, moved by a random jitter of up to
    ``jitter * h`` rows but kept inside the column's ROI band. Centres are finally clamped so the patch lies in
    the image (only then can a centre leave the band: a band touching the top or bottom of the image).
    Columns without ROI are never drawn; if the ROI lies only where no patch fits, its columns are used and the
    centres clamped.

    Args:
        roimask: ``(H, W)`` ROI mask (uint8 or bool), ``H >= h`` and ``W >= w`` (pad smaller images with
            :func:`pad_to_shape` first).
        pshape: ``(h, w)`` patch shape in pixels.
        npos: number of centres, >= 0.
        pos: ROI mask value inside the retina.
        rng: numpy Generator, or a seed for one.
        jitter: largest row offset from the band's middle as a fraction of the patch height, >= 0.

    Returns:
        ``(npos, 2)`` int64 ``(row, col)`` centres in stratum order (left to right), or ``(0, 2)`` if the ROI is
        empty or ``npos`` is 0.

    Raises:
        ValueError: ``roimask`` not 2-D or smaller than ``pshape``, negative ``npos`` or ``jitter``.
    """
    h, w = check_patch_shape(pshape)
    roi = _check_roi(roimask, pos, (h, w))
    _check_counts(npos=npos, jitter=jitter)
    rng = np.random.default_rng(rng)
    cols = np.flatnonzero(roi.any(axis=0))
    if npos == 0 or cols.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    fits = (cols >= w // 2) & (cols <= roi.shape[1] - w + w // 2)
    if fits.any():
        cols = cols[fits]
    edges = np.linspace(0, cols.size, npos + 1)
    cols = cols[np.minimum((edges[:-1] + rng.random(npos) * np.diff(edges)).astype(np.intp), cols.size - 1)]
    first, last = _band_extent(roi, cols)
    max_offset = int(round(jitter * h))
    rows = (first + last) // 2 + rng.integers(-max_offset, max_offset + 1, size=npos)
    rows = np.clip(rows, first, last)
    return clamp_centers(np.stack([rows, cols], axis=1), roi.shape, (h, w))


def _sample_region_centers(region: np.ndarray, pshape: tuple[int, int], n: int,
                           rng: np.random.Generator) -> np.ndarray:
    """``n`` random pixels of the bool ``(H, W)`` ``region`` as ``(n, 2)`` int64 centres whose patch fits.

    Like nuts-ml's ``sample_mask``, only pixels whose patch lies inside the image are drawn (uniformly, with
    replacement); if there are none, any region pixel is drawn and clamped. ``(0, 2)`` for an empty region.
    """
    if n <= 0:
        return np.empty((0, 2), dtype=np.int64)
    h, w = pshape
    r0, c0 = h // 2, w // 2
    inner = region[r0:region.shape[0] - h + r0 + 1, c0:region.shape[1] - w + c0 + 1]
    # Rejection sampling first: the ROI or its complement is a large share of the B-scan, so a few draws suffice
    # and we avoid listing its ~10^5 pixels; np.flatnonzero only for small regions.
    draws = rng.integers((0, 0), inner.shape, size=(8 * n, 2))
    hits = draws[inner[draws[:, 0], draws[:, 1]]]
    if len(hits) >= n:
        return hits[:n] + np.array([r0, c0])
    for candidates, offset in ((inner, (r0, c0)), (region, (0, 0))):
        idx = np.flatnonzero(candidates)
        if idx.size:
            idx = idx[rng.integers(idx.size, size=n)]
            centers = np.stack(np.unravel_index(idx, candidates.shape), axis=1) + np.array(offset)
            return clamp_centers(centers, region.shape, pshape)
    return np.empty((0, 2), dtype=np.int64)


# PATCH_CENTRES -> the ROI-centred centres of a bool ROI: (roi, pshape, npos, rng, jitter, jitter_px) -> (n, 2)
# (the names are utils/configuration.py's CHOICES["PATCH_CENTRES"], checked there)
PATCH_CENTRES = {
    "rmit": lambda roi, pshape, npos, rng, jitter, jitter_px: band_middle_patch_centers(
        roi, pshape, npos, pos=True, rng=rng, jitter_px=jitter_px),
    "stratified": lambda roi, pshape, npos, rng, jitter, jitter_px: stratified_patch_centers(
        roi, pshape, npos, pos=True, rng=rng, jitter=jitter),
}


def _patch_centers(roi: np.ndarray, pshape: tuple[int, int], npos: int, random_share: float, centres: str,
                   jitter: float, jitter_px: int, rng: np.random.Generator) -> np.ndarray:
    """All centres of one B-scan: ROI-centred, then ``int(npos * random_share)`` random ROI pixels (``(n, 2)``)."""
    centred = PATCH_CENTRES[centres](roi, pshape, npos, rng, jitter, jitter_px)
    # the original: nutsml's sample_patch_centers(npos=int(npos * .2)) on the ROI
    return np.concatenate([centred, _sample_region_centers(roi, pshape, int(npos * random_share), rng)])


def _prepare_arrays(img: np.ndarray, mask: np.ndarray, roimask: np.ndarray, pos: int,
                    pshape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checks sizes; returns image, mask and bool ROI, zero-padded to at least ``pshape``."""
    img, mask, roimask = np.asarray(img), np.asarray(mask), np.asarray(roimask)
    if img.ndim not in (2, 3) or mask.shape != img.shape[:2] or roimask.shape != img.shape[:2]:
        raise ValueError(f"expected image (H, W) or (H, W, C) with mask and roimask (H, W) of the same size, got "
                         f"image {img.shape}, mask {mask.shape}, roimask {roimask.shape}")
    # Deliberate difference: the original assumed every B-scan is at least a patch; a smaller one is padded with
    # zeros (image, mask background, outside the ROI) at the bottom/right instead of failing.
    return pad_to_shape(img, pshape), pad_to_shape(mask, pshape), pad_to_shape(roimask == pos, pshape)


def roi_patches(img: np.ndarray, mask: np.ndarray, roimask: np.ndarray, pshape: Sequence[int],
                npos: int, patch_border: int, random_share: float, pos: int = 1,
                out_shape: Sequence[int] | None = None, centres: str = "rmit", jitter: float = 0.1,
                jitter_px: int = 10, rng: RngLike = None, image_order: int = 1,
                fluid_codes: Sequence[int] = FLUID_CODES,
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, int, int, int]]:
    """Patches of one B-scan around its ROI (the entropy mask), with the fluids each holds: the original's
    ``sample_patches_entropy_mask``, and the one sampler the training and validation pipelines use.

    Yields, in this order: the ROI-centred patches (``PATCH_CENTRES``: :func:`band_middle_patch_centers`, the
    original, or :func:`stratified_patch_centers`), then ``int(npos * random_share)`` patches centred on random ROI
    pixels where the whole patch fits (nuts-ml's ``sample_patch_centers``, as the original). An empty ROI yields
    nothing, so a B-scan whose ROI detection failed adds no patch. Crops are resized to ``out_shape`` (the image as
    ``image_order`` says, mask and ROI nearest) before the fluids are flagged, as the original flags its resized
    patches.

    Args:
        img: ``(H, W)`` or ``(H, W, C)`` B-scan, typically uint8 with C = 3 (the B-scan and its two neighbours).
        mask: ``(H, W)`` uint8 labels 0..3 (background, IRF, SRF, PED).
        roimask: ``(H, W)`` uint8 or bool ROI mask.
        pshape: ``(h, w)`` crop shape in pixels. A B-scan smaller than that is zero-padded at the bottom/right
            (image 0, mask background, outside the ROI).
        npos: ROI-centred patches, >= 0.
        patch_border: pixels of the (resized) patch ignored at each side when flagging fluids
            (:func:`fluid_flags`).
        random_share: random ROI patches per ROI-centred patch, >= 0.
        pos: ROI mask value inside the retina.
        out_shape: ``(h, w)`` the patches are resized to; None keeps ``pshape``.
        centres: ``PATCH_CENTRES``, a name of :data:`PATCH_CENTRES`: ``"rmit"`` or ``"stratified"``.
        jitter: stratified centres' row offset as a share of ``h``; jitter_px: rmit centres' offset in pixels.
        rng: numpy Generator, or a seed for one.
        image_order: how the image crop is resized: 1 anti-aliased linear (``IMAGE_RESAMPLING = "linear"``) or 0
            nearest neighbour (the original's ``skimage.transform.resize(order=0)``).
        fluid_codes: the label codes of IRF, SRF and PED (``IRF``, ``SRF``, ``PED``), which the flags test.

    Yields:
        ``(img_patch, mask_patch, roi_patch, is_IRF, is_SRF, is_PED)``: ``(h, w[, C])`` image of the input dtype,
        ``(h, w)`` mask holding only input labels, ``(h, w)`` uint8 ROI 0/1, and three ints in {0, 1}.

    Raises:
        ValueError: mismatched sizes, a malformed shape, negative counts or a border that leaves no pixel
            (checked before anything is sampled).
    """
    pshape = check_patch_shape(pshape)
    out_shape = pshape if out_shape is None else check_patch_shape(out_shape, "out_shape")
    fluid_flags(np.zeros(out_shape, dtype=np.uint8), patch_border)  # checks the border before any work
    _check_counts(npos=npos, random_share=random_share, jitter=jitter, jitter_px=jitter_px)
    img, mask, roi = _prepare_arrays(img, mask, roimask, pos, pshape)
    rng = np.random.default_rng(rng)
    for center in _patch_centers(roi, pshape, npos, random_share, centres, jitter, jitter_px, rng):
        img_patch = resize_patch(crop_patch(img, center, pshape), out_shape, order=image_order)
        mask_patch = resize_patch(crop_patch(mask, center, pshape), out_shape, order=0)
        roi_patch = resize_patch(crop_patch(roi, center, pshape), out_shape, order=0).view(np.uint8)
        yield (img_patch, mask_patch, roi_patch) + fluid_flags(mask_patch, patch_border, fluid_codes)


# ----------------------------------------------------------------------------------------------------------------
# The nut
# ----------------------------------------------------------------------------------------------------------------
def _resampled_patches(iterable: Iterable[Sequence], columns: tuple[int, ...], flagcols: tuple[int | None, ...],
                       spacingcol: int | None, pshape: tuple[int, int], reference_spacing_mm: float,
                       rng: np.random.Generator, sampler_args: dict) -> Iterator[tuple]:
    for sample in iterable:
        spacing = reference_spacing_mm if spacingcol is None else sample[spacingcol]
        crop_shape = physical_patch_shape(pshape, spacing, reference_spacing_mm)
        imagecol, maskcol, roicol = columns
        patches = roi_patches(sample[imagecol], sample[maskcol], sample[roicol], crop_shape,
                              out_shape=pshape, rng=rng, **sampler_args)
        for img_patch, mask_patch, roi_patch, *flags in patches:
            out = list(sample)
            out[imagecol], out[maskcol], out[roicol] = img_patch, mask_patch, roi_patch
            for col, flag in zip(flagcols, flags):
                if col is not None:
                    out[col] = flag
            yield _like(sample, out)


def _like(sample: Sequence, values: list) -> tuple:
    """``values`` as a tuple of ``sample``'s named-tuple class when it has one (the training pipeline's
    ``LoadedSlice``), else as a plain tuple."""
    return sample._make(values) if isinstance(sample, tuple) and hasattr(sample, "_fields") else tuple(values)


@nut_processor
def ResampledRoiPatches(iterable: Iterable[Sequence], pshape: Sequence[int], npos: int, patch_border: int,
                        random_share: float, reference_spacing_mm: float, pos: int = 1, imagecol: int = 0,
                        maskcol: int = 1, roicol: int = 2, IRFcol: int | None = 3, SRFcol: int | None = 4,
                        PEDcol: int | None = 5, spacingcol: int | None = 6, centres: str = "rmit",
                        jitter: float = 0.1, jitter_px: int = 10, rng: RngLike = None, image_order: int = 1,
                        fluid_codes: Sequence[int] = FLUID_CODES) -> Iterator[tuple]:
    """samples >> ResampledRoiPatches(pshape, npos, ...) >> ...: one output sample per patch (the original's
    ``ImagePatchesByMaskRetouch_resampled``, RuwanT/retouch ``custom_nuts.py``).

    Default sample layout (change it with the ``*col`` arguments; other columns pass through unchanged)::

        (image, mask, roimask, is_IRF, is_SRF, is_PED, axial_spacing_mm, ...)
         0      1     2        3       4       5       6

    For each B-scan, patches are sampled by :func:`roi_patches` with a crop of
    :func:`physical_patch_shape` (``pshape`` height scaled by ``reference_spacing_mm / axial_spacing_mm``, so a
    patch spans the same depth on every vendor; the spacing column holds the spacing of ``DEPTH_SCALE``, the
    original's factor per B-scan height by default), resized to ``pshape``. Output columns: image ``(h, w[, C])``
    of the input dtype, mask ``(h, w)`` of the input dtype holding only input labels, roimask ``(h, w)`` uint8 0/1,
    the three flag columns ints 0/1; axial_spacing_mm and any other column unchanged. Output samples are tuples, of
    the input sample's class when that is a named tuple (:class:`utils.train.data_pipeline.LoadedSlice`).

    Args:
        iterable: samples (tuples or lists) with the columns above; image ``(H, W)`` or ``(H, W, C)``, mask and
            roimask ``(H, W)``; any height (a B-scan smaller than the crop is zero-padded).
        pshape: ``(h, w)`` output patch shape in pixels, e.g. ``cfg.PATCH_SHAPE``.
        npos, patch_border, random_share, pos, centres, jitter, jitter_px, image_order, fluid_codes: as
            :func:`roi_patches`.
        reference_spacing_mm: axial spacing that ``pshape[0]`` refers to (Spectralis), > 0.
        imagecol, maskcol, roicol: columns of image, mask and ROI mask (replaced by patches).
        IRFcol, SRFcol, PEDcol: columns replaced by the patch flags; None to not write that flag.
        spacingcol: column with the axial spacing in mm (> 0); None to crop ``pshape`` unscaled.
        rng: numpy Generator, or a seed. A Generator continues its stream each time the nut is applied (use this
            for training: new patches every epoch); an int seed restarts it, giving the same patches every time.

    Raises:
        ValueError: a malformed ``pshape`` (when the nut is applied); during iteration, bad settings (checked by
            the sampler before each B-scan's patches), mismatched sizes or a spacing that is not a positive number.
    """
    sampler_args = {"npos": npos, "patch_border": patch_border, "random_share": random_share, "pos": pos,
                    "centres": centres, "jitter": jitter, "jitter_px": jitter_px, "image_order": image_order,
                    "fluid_codes": tuple(fluid_codes)}
    return _resampled_patches(iterable, (imagecol, maskcol, roicol), (IRFcol, SRFcol, PEDcol), spacingcol,
                              check_patch_shape(pshape), reference_spacing_mm, np.random.default_rng(rng),
                              sampler_args)


ImagePatchesByMaskRetouch_resampled = ResampledRoiPatches  # the original's name (RuwanT/retouch custom_nuts.py)
