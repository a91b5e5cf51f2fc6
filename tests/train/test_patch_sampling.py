"""Tests of utils/train/patch_sampling.py: patch geometry, resizing, fluid flags, centre sampling and the patch nut."""

from __future__ import annotations

import numpy as np
import pytest
from nutsflow import Collect

import config
from utils.train.patch_sampling import (FLUID_CODES, ResampledRoiPatches, band_middle_patch_centers, clamp_centers,
                                         crop_patch, fluid_flags, pad_to_shape, roi_patches, stratified_patch_centers)

REF_MM = config.SPECTRALIS_AXIAL_SPACING_MM  # 0.0039


def slanted_band(shape: tuple[int, int], top: int, thickness: int, slope: float = 0.25) -> np.ndarray:
    """(H, W) uint8 ROI: in column c, rows top + slope * c .. top + slope * c + thickness - 1 are 1."""
    rows = np.arange(shape[0])[:, None]
    start = top + (slope * np.arange(shape[1])).astype(int)[None, :]
    return ((rows >= start) & (rows < start + thickness)).astype(np.uint8)


def make_bscan(shape: tuple[int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A (H, W, 3) uint8 B-scan, a mask with each fluid in a block inside the ROI band and that band."""
    h, w = shape
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    roi = np.zeros((h, w), np.uint8)
    roi[h // 4:3 * h // 4] = 1
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 + 10:h // 4 + 30, w // 8:w // 4] = config.IRF
    mask[h // 2:h // 2 + 15, w // 2:w // 2 + w // 8] = config.SRF
    mask[3 * h // 4 - 20:3 * h // 4, 3 * w // 4:7 * w // 8] = config.PED
    return img, mask, roi



def test_crop_patch_takes_the_window_around_the_centre():
    image = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8)
    np.testing.assert_array_equal(crop_patch(image, (3, 4), (2, 3)), image[2:4, 3:6])
    np.testing.assert_array_equal(crop_patch(image, (2, 3), (3, 4)), image[1:4, 1:5])
    with pytest.raises(ValueError, match="outside"):
        crop_patch(image, (0, 4), (2, 3))


def test_clamp_centers_keeps_the_patch_inside_and_moves_inner_centres_not():
    centers = np.array([[0, 0], [99, 99], [5, 6]])
    clamped = clamp_centers(centers, (10, 12), (4, 6))
    np.testing.assert_array_equal(clamped, [[2, 3], [8, 9], [5, 6]])
    image = np.zeros((10, 12))
    for center in clamped:
        assert crop_patch(image, center, (4, 6)).shape == (4, 6)


def test_pad_to_shape_pads_bottom_right_with_zeros_and_leaves_large_arrays_alone():
    image = np.full((3, 5, 3), 7, np.uint8)
    padded = pad_to_shape(image, (4, 4))
    assert padded.shape == (4, 5, 3) and padded.dtype == np.uint8
    assert (padded[:3] == 7).all() and (padded[3] == 0).all()
    assert pad_to_shape(image, (2, 2)) is image



# ----------------------------------------------------------------------------------------------------------------
# Fluid flags
# ----------------------------------------------------------------------------------------------------------------
def test_fluid_flags_ignore_the_border():
    mask = np.zeros((32, 16), np.uint8)
    mask[0:4, :] = config.IRF  # only in the 4-pixel border
    mask[:, 12:] = config.PED  # only in the border too
    mask[10, 8] = config.SRF  # inside
    assert fluid_flags(mask, 4) == (0, 1, 0)
    assert fluid_flags(mask, 0) == (1, 1, 1)
    mask[4, 4] = config.IRF  # first pixel inside the border
    assert fluid_flags(mask, 4) == (1, 1, 0)
    assert fluid_flags(np.zeros((8, 8), np.uint8), 2) == (0, 0, 0)


def test_the_flags_test_the_fluid_codes_given():
    mask = np.full((32, 32), 3, np.uint8)  # PED by config.py's codes, IRF by the given ones
    img, roi = np.full((32, 32), 100, np.uint8), np.ones((32, 32), np.uint8)
    patches = list(roi_patches(img, mask, roi, (16, 16), 4, 2, 0.0, rng=0))
    swapped = list(roi_patches(img, mask, roi, (16, 16), 4, 2, 0.0, rng=0, fluid_codes=(3, 2, 1)))
    assert patches and all(patch[3:] == (0, 0, 1) for patch in patches)
    assert len(swapped) == len(patches) and all(patch[3:] == (1, 0, 0) for patch in swapped)


def test_fluid_flags_rejects_a_border_that_leaves_nothing():
    with pytest.raises(ValueError, match="border"):
        fluid_flags(np.zeros((8, 16), np.uint8), 4)
    with pytest.raises(ValueError, match="border"):
        fluid_flags(np.zeros((8, 16), np.uint8), -1)


# ----------------------------------------------------------------------------------------------------------------
# Patch centres: the original's every-10th-column sampler (PATCH_CENTRES = "rmit")
# ----------------------------------------------------------------------------------------------------------------
def flat_band(shape: tuple[int, int], first: int, last: int) -> np.ndarray:
    """(H, W) uint8 ROI holding rows first..last (inclusive) of every column."""
    roi = np.zeros(shape, np.uint8)
    roi[first:last + 1] = 1
    return roi


def test_oct_patch_centers_are_on_the_every_10th_column_grid_and_the_band_middle():
    roi = flat_band((128, 256), 40, 80)  # the middle of every column's ROI is row 60
    pshape = (32, 32)
    centers = band_middle_patch_centers(roi, pshape, 12, rng=1, jitter_px=0)
    assert centers.shape == (12, 2) and centers.dtype == np.int64
    rows, cols = centers[:, 0], centers[:, 1]
    grid = np.arange(pshape[1] // 2, 256 - pshape[1] // 2, 10)  # 16, 26, ..., 236
    assert set(cols.tolist()) <= set(grid.tolist())
    assert len(np.unique(cols)) == 12  # drawn without replacement
    np.testing.assert_array_equal(rows, 60)
    for center in centers:
        assert crop_patch(roi, center, pshape).shape == pshape


def test_oct_patch_centers_jitter_rows_within_10_px_of_the_middle():
    roi = flat_band((128, 256), 40, 80)
    rows = np.concatenate([band_middle_patch_centers(roi, (32, 32), 12, rng=seed)[:, 0] for seed in range(40)])
    assert ((rows >= 60 - 10) & (rows < 60 + 10)).all()
    assert rows.min() == 50 and rows.max() == 69  # the whole range [-10, 10) is used, and only it
    assert len(np.unique(rows)) == 20


def test_oct_patch_centers_follow_a_slanted_band():
    roi = slanted_band((128, 256), top=20, thickness=40)  # rows 20 + c // 4 .. 59 + c // 4
    centers = band_middle_patch_centers(roi, (32, 32), 8, rng=1, jitter_px=0)
    band_top = 20 + (centers[:, 1] * 0.25).astype(int)
    assert set((centers[:, 0] - band_top).tolist()) <= {19, 20}  # int(first + 19.5 + u), u in [0, 1)


def test_oct_patch_centers_of_a_wide_roi_are_npos_and_fewer_where_few_columns_hold_roi():
    wide = flat_band((64, 256), 20, 40)
    assert len(band_middle_patch_centers(wide, (16, 32), 12, rng=0)) == 12
    narrow = np.zeros((64, 256), np.uint8)
    narrow[20:41, 100:121] = 1  # holds the grid columns 106 and 116 only (grid 16, 26, ..., 236)
    centers = band_middle_patch_centers(narrow, (16, 32), 12, rng=0)
    assert sorted(centers[:, 1].tolist()) == [106, 116]


def test_oct_patch_centers_skip_columns_without_roi():
    roi = np.zeros((64, 256), np.uint8)
    roi[20:41, 150:] = 1
    centers = band_middle_patch_centers(roi, (16, 32), 16, rng=0)
    assert len(centers) == 9  # grid columns 156..236
    assert (centers[:, 1] >= 150).all()
    assert ((centers[:, 0] >= 20) & (centers[:, 0] < 40)).all()


@pytest.mark.parametrize("sampler", [band_middle_patch_centers, stratified_patch_centers])
def test_patch_centers_of_an_empty_roi_are_none(sampler):
    centers = sampler(np.zeros((64, 64), np.uint8), (16, 16), 8, rng=0)
    assert centers.shape == (0, 2)


@pytest.mark.parametrize("sampler", [band_middle_patch_centers, stratified_patch_centers])
def test_patch_centers_reject_a_roi_smaller_than_the_patch_and_negative_counts(sampler):
    with pytest.raises(ValueError, match="pad"):
        sampler(np.ones((16, 64), np.uint8), (32, 32), 4, rng=0)
    with pytest.raises(ValueError, match="npos"):
        sampler(np.ones((64, 64), np.uint8), (32, 32), -1, rng=0)


# ----------------------------------------------------------------------------------------------------------------
# Patch centres: stratified across the width (PATCH_CENTRES = "stratified")
# ----------------------------------------------------------------------------------------------------------------
def test_stratified_patch_centers_lie_in_the_band_middle_with_the_patch_inside():
    roi = slanted_band((128, 256), top=20, thickness=40)  # band middle at row 39 + c // 4
    pshape = (32, 32)
    centers = stratified_patch_centers(roi, pshape, 8, rng=1, jitter=0)
    assert centers.shape == (8, 2) and centers.dtype == np.int64
    rows, cols = centers[:, 0], centers[:, 1]
    np.testing.assert_array_equal(rows, 20 + (cols * 0.25).astype(int) + 39 // 2)
    jittered = stratified_patch_centers(roi, pshape, 64, rng=2, jitter=0.5)
    band_top = 20 + (jittered[:, 1] * 0.25).astype(int)
    assert ((jittered[:, 0] >= band_top) & (jittered[:, 0] < band_top + 40)).all()
    assert len(np.unique(jittered[:, 0] - band_top)) > 5  # jitter does move the rows
    for center in np.concatenate([centers, jittered]):
        assert crop_patch(roi, center, pshape).shape == pshape


def test_stratified_patch_centers_jitter_stays_inside_a_thin_band():
    roi = slanted_band((128, 256), top=40, thickness=5)
    centers = stratified_patch_centers(roi, (32, 32), 64, rng=3, jitter=0.5)  # up to 16 rows off the middle
    band_top = 40 + (centers[:, 1] * 0.25).astype(int)
    assert ((centers[:, 0] >= band_top) & (centers[:, 0] < band_top + 5)).all()


def test_stratified_patch_centers_are_spread_across_the_width():
    roi = np.ones((64, 511), np.uint8)
    for seed in range(5):
        centers = stratified_patch_centers(roi, (32, 128), 8, rng=seed)
        # Columns where the patch fits: 64..447; one centre in each eighth (48 columns) of that range.
        counts, _ = np.histogram(centers[:, 1], bins=8, range=(64, 448))
        np.testing.assert_array_equal(counts, np.ones(8))


def test_stratified_patch_centers_skip_columns_without_roi():
    roi = np.zeros((64, 256), np.uint8)
    roi[20:40, 150:] = 1
    centers = stratified_patch_centers(roi, (16, 32), 16, rng=0)
    assert len(centers) == 16
    assert (centers[:, 1] >= 150).all()
    assert ((centers[:, 0] >= 20) & (centers[:, 0] < 40)).all()


# ----------------------------------------------------------------------------------------------------------------
# roi_patches
# ----------------------------------------------------------------------------------------------------------------
def test_sample_patches_shapes_flags_and_counts():
    img, mask, roi = make_bscan((128, 256))
    pshape, border = (48, 32), 6
    patches = list(roi_patches(img, mask, roi, pshape, 10, border, 0.2, rng=4))
    assert len(patches) == 10 + 2
    seen = np.zeros(3, int)
    for img_patch, mask_patch, roi_patch, *flags in patches:
        assert img_patch.shape == (48, 32, 3) and img_patch.dtype == np.uint8
        assert mask_patch.shape == (48, 32) and mask_patch.dtype == np.uint8
        assert roi_patch.shape == (48, 32) and roi_patch.dtype == np.uint8 and set(np.unique(roi_patch)) <= {0, 1}
        expected = [int(np.any(mask_patch[border:-border, border:-border] == code)) for code in FLUID_CODES]
        assert flags == expected and all(type(f) is int for f in flags)
        seen += flags
    assert seen.sum() > 0  # the fluids are met at least once, so the flags were really tested


def test_sample_patches_are_12_centred_and_2_random_per_wide_bscan():
    h, w = 128, 256
    roi = flat_band((h, w), 40, 80)  # the middle of every column's ROI is row 60
    rows, cols = np.indices((h, w))
    img = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)  # each pixel tells where it is
    mask = np.zeros((h, w), np.uint8)
    pshape = (32, 32)
    patches = list(roi_patches(img, mask, roi, pshape, 12, 4, 0.2, rng=0))
    assert len(patches) == 12 + int(0.2 * 12) == 14
    centres = np.array([p[0][pshape[0] // 2, pshape[1] // 2, :2] for p in patches], dtype=int)
    # first the 12 ROI-centred patches: grid columns 16, 26, ..., 236, rows within [60 - 10, 60 + 10)
    assert set(centres[:12, 1].tolist()) <= set(range(16, 240, 10)) and len(set(centres[:12, 1])) == 12
    assert ((centres[:12, 0] >= 50) & (centres[:12, 0] < 70)).all()
    # then int(0.2 * 12) = 2 patches centred on random ROI pixels
    assert ((centres[12:, 0] >= 40) & (centres[12:, 0] <= 80)).all()


def test_sample_patches_fewer_where_few_columns_hold_roi_and_none_for_an_empty_roi():
    img, mask, _ = make_bscan((64, 256))
    narrow = np.zeros((64, 256), np.uint8)
    narrow[20:41, 100:121] = 1  # 2 grid columns
    patches = list(roi_patches(img, mask, narrow, (16, 32), 12, 2, 0.2, rng=0))
    assert len(patches) == 2 + 2
    empty = np.zeros((64, 256), np.uint8)
    assert list(roi_patches(img, mask, empty, (16, 32), 12, 2, 0.2, rng=0)) == []
    assert list(roi_patches(img, mask, empty, (16, 32), 12, 2, 0.2, centres="stratified",
                                            rng=0)) == []


@pytest.mark.parametrize("centres", ["rmit", "stratified"])
def test_sample_patches_are_all_centred_in_the_roi(centres):
    h, w = 96, 192
    roi = slanted_band((h, w), top=10, thickness=30)
    img = np.repeat((roi * 255)[..., None], 3, axis=2)  # the image shows the ROI: its centre pixel tells where
    mask = np.zeros((h, w), np.uint8)
    pshape = (16, 16)
    patches = list(roi_patches(img, mask, roi, pshape, 6, 2, 0.5, centres=centres, rng=0))
    assert len(patches) == 6 + 3
    assert [p[0][pshape[0] // 2, pshape[1] // 2, 0] for p in patches] == [255] * 9
    assert all(np.array_equal(p[2], p[0][..., 0] // 255) for p in patches)  # the ROI patch is cut at the same place


def test_sample_patches_random_share_sets_the_number_of_random_patches():
    img, mask, roi = make_bscan((64, 64))  # 5 grid columns 8, 18, ..., 48, all in the ROI
    for share, expected in [(0, 5), (0.2, 5 + 1), (2, 5 + 10)]:
        assert len(list(roi_patches(img, mask, roi, (16, 16), 5, 2, share, rng=0))) == expected


def test_sample_patches_of_an_image_smaller_than_the_patch_are_padded():
    img = np.full((20, 30, 3), 9, np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    mask[5:10, 5:10] = config.SRF
    roi = np.ones((20, 30), np.uint8)
    patches = list(roi_patches(img, mask, roi, (32, 64), 3, 2, 1, centres="stratified", rng=0))
    assert len(patches) == 3 + 3
    for img_patch, mask_patch, roi_patch, is_irf, is_srf, is_ped in patches:
        assert img_patch.shape == (32, 64, 3) and mask_patch.shape == (32, 64)
        assert set(np.unique(img_patch)) == {0, 9}  # the B-scan plus zero padding
        np.testing.assert_array_equal(roi_patch, pad_to_shape(roi, (32, 64)))  # the padding is outside the ROI
        assert (is_irf, is_srf, is_ped) == (0, 1, 0)  # the only patch position is the whole padded image


def test_sample_patches_resize_to_out_shape_before_flagging():
    img, mask, roi = make_bscan((128, 256))
    patches = list(roi_patches(img, mask, roi, (64, 32), 4, 4, 0, out_shape=(32, 16), rng=0))
    assert len(patches) == 4
    for img_patch, mask_patch, roi_patch, *flags in patches:
        assert img_patch.shape == (32, 16, 3) and mask_patch.shape == roi_patch.shape == (32, 16)
        assert flags == [int(np.any(mask_patch[4:-4, 4:-4] == code)) for code in FLUID_CODES]


def test_sample_patches_reject_bad_settings():
    img, mask, roi = make_bscan((64, 64))
    with pytest.raises(ValueError, match="same size"):
        list(roi_patches(img, mask[:-1], roi, (16, 16), 2, 2, 0.2, rng=0))
    with pytest.raises(ValueError, match="random_share"):
        list(roi_patches(img, mask, roi, (16, 16), 2, 2, -0.2, rng=0))
    with pytest.raises(ValueError, match="border"):
        list(roi_patches(img, mask, roi, (16, 16), 2, 8, 0.2, rng=0))


# ----------------------------------------------------------------------------------------------------------------
# The nut
# ----------------------------------------------------------------------------------------------------------------
def run_nut(samples, **kwargs):
    settings = dict(pshape=(256, 128), npos=4, patch_border=16, random_share=0.5, reference_spacing_mm=REF_MM,
                    rng=0)
    settings.update(kwargs)
    return samples >> ResampledRoiPatches(**settings) >> Collect()


def test_nut_replaces_columns_and_yields_one_sample_per_patch():
    samples = []
    for k, (height, spacing_mm) in enumerate([(1024, 0.00195), (496, 0.0039), (885, 0.0026)]):
        img, mask, roi = make_bscan((height, 512), seed=k)
        samples.append([img, mask, roi, 1, 1, 1, spacing_mm, f"case{k}"])  # lists work as well as tuples
    out = run_nut(samples)
    assert len(out) == 3 * (4 + 2)
    for sample in out:
        img_patch, mask_patch, roi_patch, is_irf, is_srf, is_ped, spacing_mm, name = sample
        assert isinstance(sample, tuple)
        assert img_patch.shape == (256, 128, 3) and img_patch.dtype == np.uint8
        assert mask_patch.shape == (256, 128) and mask_patch.dtype == np.uint8
        assert roi_patch.shape == (256, 128) and roi_patch.dtype == np.uint8 and set(np.unique(roi_patch)) <= {0, 1}
        assert set(np.unique(mask_patch)) <= {0, 1, 2, 3}
        assert [is_irf, is_srf, is_ped] == [int(np.any(mask_patch[16:-16, 16:-16] == c)) for c in FLUID_CODES]
    assert [s[6:] for s in out] == [(0.00195, "case0")] * 6 + [(0.0039, "case1")] * 6 + [(0.0026, "case2")] * 6
    assert sum(s[3] + s[4] + s[5] for s in out) > 0
    assert sum(s[3] + s[4] + s[5] for s in out) < 3 * len(out)  # flags were computed, not passed through


def test_nut_keeps_a_named_tuple_class_and_its_fields():
    """The training pipeline's LoadedSlice samples come out as LoadedSlice patches, other columns as they were."""
    from utils.train.data_pipeline import LoadedSlice
    img, mask, roi = make_bscan((496, 512), seed=1)
    out = run_nut([LoadedSlice(img, mask, roi, 1, 1, 1, REF_MM)], IRFcol=None)
    assert len(out) == 6 and all(type(patch) is LoadedSlice for patch in out)
    assert all(patch.image.shape == (256, 128, 3) and patch.mask.shape == patch.roi.shape == (256, 128)
               for patch in out)
    assert all(patch.is_irf == 1 and patch.scaling_spacing_mm == REF_MM for patch in out)  # not written / kept
    assert [(patch.is_srf, patch.is_ped) for patch in out] == \
        [tuple(int(np.any(patch.mask[16:-16, 16:-16] == c)) for c in FLUID_CODES[1:]) for patch in out]


def test_nut_masks_hold_only_the_labels_of_the_bscan():
    img, _, roi = make_bscan((885, 512))
    mask = np.zeros((885, 512), np.uint8)
    mask[300:500:3, ::3] = config.PED  # many 0/PED edges: a linear resize would create IRF and SRF values
    out = run_nut([(img, mask, roi, 0, 0, 0, 0.0026)], npos=8)
    assert all(set(np.unique(s[1])) <= {0, config.PED} for s in out)
    assert any(s[5] for s in out)


@pytest.mark.parametrize("spacing_mm", [0.00195, 0.0039, 0.0026])
def test_nut_crops_the_same_depth_in_mm_before_resizing(spacing_mm):
    height = 1024
    img = np.repeat((np.arange(height) // 4).astype(np.uint8)[:, None, None], 3, axis=2)  # value = row // 4
    img = np.ascontiguousarray(np.broadcast_to(img, (height, 512, 3)))
    roi = np.zeros((height, 512), np.uint8)
    roi[height // 2 - 100:height // 2 + 100] = 1  # a band clear of the image edges: no clamping in depth
    out = run_nut([(img, np.zeros_like(roi), roi, 0, 0, 0, spacing_mm)], npos=3, random_share=0, jitter_px=0)
    assert len(out) == 3
    crop_rows = round(256 * REF_MM / spacing_mm)
    for sample in out:
        column = sample[0][:, 0, 0].astype(int)
        assert abs((column[-1] - column[0]) - (crop_rows - 1) / 4) <= 2  # the ramp the crop spans


def test_nut_handles_unknown_height_small_image_and_empty_roi():
    img, mask, roi = make_bscan((700, 512))
    tiny_img, tiny_mask, tiny_roi = make_bscan((100, 60))
    samples = [
        (img, mask, roi, 0, 0, 0, 0.003),  # a height no vendor has
        (tiny_img, tiny_mask, tiny_roi, 0, 0, 0, 0.00195),  # smaller than the 512x128 crop
        (img, mask, np.zeros_like(roi), 0, 0, 0, 0.0039),  # ROI detection failed: no patch
    ]
    out = run_nut(samples, npos=4, random_share=0.5, centres="stratified")
    assert [s[6] for s in out] == [0.003] * 6 + [0.00195] * 6
    assert all(s[0].shape == (256, 128, 3) and s[1].shape == (256, 128) for s in out)
    out = run_nut(samples, npos=4, random_share=0.5)
    assert [s[6] for s in out].count(0.003) == 6 and 0.0039 not in [s[6] for s in out]
    assert all(s[0].shape == (256, 128, 3) and s[1].shape == (256, 128) for s in out)


def test_nut_checks_settings_lazily_while_iterating():
    nut = ResampledRoiPatches((32, 32), 4, 16, 0.2, REF_MM)  # a border that leaves no pixel
    assert [] >> nut >> Collect() == []  # nothing checked before the first sample
    img, mask, roi = make_bscan((64, 64))
    with pytest.raises(ValueError, match="border"):
        [(img, mask, roi, 0, 0, 0, REF_MM)] >> nut >> Collect()
    with pytest.raises(ValueError, match="axial_spacing_mm"):
        run_nut([(img, mask, roi, 0, 0, 0, 0.0)], pshape=(16, 16), patch_border=2)


def test_nut_is_deterministic_for_a_seed():
    img, mask, roi = make_bscan((496, 512))
    samples = [(img, mask, roi, 0, 0, 0, 0.0039)] * 2

    def patches(rng):
        return np.stack([s[0] for s in run_nut(samples, rng=rng)])

    np.testing.assert_array_equal(patches(7), patches(7))
    np.testing.assert_array_equal(patches(np.random.default_rng(7)), patches(7))
    assert not np.array_equal(patches(7), patches(8))


def test_nut_with_a_generator_draws_new_patches_each_time_it_is_applied():
    img, mask, roi = make_bscan((496, 512))
    nut = ResampledRoiPatches((256, 128), 4, 16, 0.2, REF_MM, rng=np.random.default_rng(0))
    first = np.stack([s[0] for s in [(img, mask, roi, 0, 0, 0, 0.0039)] >> nut >> Collect()])
    second = np.stack([s[0] for s in [(img, mask, roi, 0, 0, 0, 0.0039)] >> nut >> Collect()])
    assert not np.array_equal(first, second)


def test_nearest_image_resampling_keeps_only_input_values():
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    mask = np.zeros((300, 200), np.uint8)
    roi = np.zeros((300, 200), np.uint8)
    roi[100:200] = 1
    linear = list(roi_patches(img, mask, roi, (240, 100), 2, 8, 0.0, out_shape=(120, 100), rng=1))
    nearest = list(roi_patches(img, mask, roi, (240, 100), 2, 8, 0.0, out_shape=(120, 100), rng=1,
                                               image_order=0))
    values = set(np.unique(img))
    for (lin, *_), (near, *_) in zip(linear, nearest):
        assert near.shape == lin.shape == (120, 100, 3)
        assert set(np.unique(near)) <= values
        assert not np.array_equal(near, lin)  # linear averages neighbouring rows


def test_the_nut_keeps_the_originals_name():
    from utils.train.patch_sampling import ImagePatchesByMaskRetouch_resampled  # RuwanT/retouch custom_nuts.py
    assert ImagePatchesByMaskRetouch_resampled is ResampledRoiPatches
