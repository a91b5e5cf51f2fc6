"""Tests of utils/model/input_scale.py: the network's input scale, the depth each vendor's crop spans, and patch
resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import config
from utils.model import input_scale
from utils.model.input_scale import normalise_input, physical_patch_shape, resize_patch

REF_MM = config.SPECTRALIS_AXIAL_SPACING_MM  # 0.0039


def test_normalise_input_maps_0_255_to_minus_one_up_to_one_alike_in_numpy_and_torch():
    levels = np.arange(256, dtype=np.float32)
    scaled = normalise_input(levels)
    assert scaled.dtype == np.float32 and scaled[0] == -1.0 and scaled[128] == 0.0 and scaled[255] == 127 / 128
    np.testing.assert_array_equal(normalise_input(torch.from_numpy(levels)).numpy(), scaled)


# ----------------------------------------------------------------------------------------------------------------
# Geometry, cropping, resizing
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spacing_mm, rows", [
    (0.00195, 512),  # Cirrus
    (0.0039, 256),  # Spectralis
    (0.0026, round(256 * 0.0039 / 0.0026)),  # Topcon T-2000 (384)
    (0.0035, round(256 * 0.0039 / 0.0035)),  # Topcon T-1000 (285)
])
def test_physical_patch_shape_spans_the_same_depth_on_every_vendor(spacing_mm, rows):
    assert physical_patch_shape((256, 128), spacing_mm, REF_MM) == (rows, 128)


@pytest.mark.parametrize("spacing_mm", [0, -0.0039, float("nan"), float("inf"), None, "0.0039"])
def test_physical_patch_shape_rejects_a_spacing_that_is_not_a_positive_number(spacing_mm):
    with pytest.raises(ValueError, match="axial_spacing_mm"):
        physical_patch_shape((256, 128), spacing_mm, REF_MM)


def test_resize_patch_image_keeps_uint8_and_shrinks_with_anti_aliasing():
    stripes = np.zeros((768, 16, 3), np.uint8)
    stripes[1::2] = 255  # one-row stripes: sampling every 3rd row without smoothing would give 0/255 stripes
    small = resize_patch(stripes, (256, 16), order=1)
    assert small.shape == (256, 16, 3) and small.dtype == np.uint8
    assert small[1:-1].min() > 64 and small[1:-1].max() < 192
    constant = np.full((512, 128, 3), 77, np.uint8)
    assert (resize_patch(constant, (256, 128)) == 77).all()


def test_resize_patch_image_of_other_dtypes_and_channel_counts():
    ramp = np.repeat(np.linspace(0, 200, 512)[:, None], 8, axis=1)
    for patch in (ramp.astype(np.float32), ramp.astype(np.uint16), np.stack([ramp, ramp], -1).astype(np.uint8)):
        out = resize_patch(patch, (256, 8))
        assert out.dtype == patch.dtype and out.shape == (256, 8) + patch.shape[2:]
        assert abs(float(out[128, 0].flat[0]) - ramp[256, 0]) < 1.5  # the middle row lands mid-ramp


def test_resize_patch_mask_holds_only_original_labels():
    rng = np.random.default_rng(3)
    mask = rng.choice(np.array([0, 2, 3], np.uint8), size=(384, 128))  # no IRF: interpolation would invent 1s
    for shape in ((256, 128), (300, 100), (512, 128)):
        out = resize_patch(mask, shape, order=0)
        assert out.dtype == np.uint8 and out.shape == shape
        assert set(np.unique(out)) <= {0, 2, 3}
    blocks = np.repeat(np.repeat(np.array([[0, 1], [2, 3]], np.uint8), 4, 0), 4, 1)  # 8x8, 4x4 blocks
    np.testing.assert_array_equal(resize_patch(blocks, (4, 4), order=0), np.repeat(np.repeat(
        np.array([[0, 1], [2, 3]]), 2, 0), 2, 1))
    thirds = np.arange(9, dtype=np.uint8).reshape(3, 3)
    assert resize_patch(thirds, (1, 1), order=0)[0, 0] == 4  # nearest to pixel centres: the middle pixel


def test_resize_patch_rejects_unknown_order():
    with pytest.raises(ValueError, match="order"):
        resize_patch(np.zeros((4, 4), np.uint8), (2, 2), order=3)


def test_signal_columns_are_those_with_any_nonzero_pixel():
    from utils.model.input_scale import signal_columns
    bscans = np.zeros((2, 4, 5), np.uint8)
    bscans[0, 3, 1] = 1
    bscans[1, :, 4] = 200
    assert signal_columns(bscans).tolist() == [[[False, True, False, False, False]],
                                               [[False, False, False, False, True]]]
    assert signal_columns(bscans[0]).shape == (1, 5)


def test_the_original_height_table_sets_the_crop_height_of_the_retouch_devices():
    from utils.model.input_scale import scaling_spacing_mm
    reference = 0.0039
    # Spectralis 496 rows: the original crops exactly the patch height; the header's 0.00387 mm gives 258
    spectralis = scaling_spacing_mm(0.00387, 496, "height_table", reference)
    assert physical_patch_shape((256, 128), spectralis, reference) == (256, 128)
    assert physical_patch_shape((256, 128), scaling_spacing_mm(0.00387, 496, "spacing", reference), reference) == (
        258, 128)
    assert physical_patch_shape((256, 128), scaling_spacing_mm(0.00195, 1024, "height_table", reference),
                                reference) == (512, 128)
    assert physical_patch_shape((256, 128), scaling_spacing_mm(0.0026, 885, "height_table", reference),
                                reference) == (round(256 * 0.004 / 0.0026), 128)
    assert scaling_spacing_mm(0.005, 700, "height_table", reference) == 0.005  # a height the original lacked


def test_channel_bscans_are_the_neighbours_clamped_or_the_bscan_itself():
    z = np.arange(4)
    assert [list(index) for index in input_scale.channel_bscans(z, 4, "neighbours")] == [
        [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 3]]
    assert [list(index) for index in input_scale.channel_bscans(z, 4, "repeat")] == [[0, 1, 2, 3]] * 3
    assert [int(index) for index in input_scale.channel_bscans(0, 1, "neighbours")] == [0, 0, 0]
