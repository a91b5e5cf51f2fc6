import warnings

import numpy as np
import pytest
from skimage.filters.rank import entropy
from skimage.morphology import binary_closing, disk

import config
from utils.prepare.roi import binary_closing_disk, fill_columns, local_entropy, roi_mask, roi_mask_reference


@pytest.mark.parametrize("shape, radius", [((30, 25), 1), ((40, 33), 4), ((9, 70), 6), ((3, 2), 5), ((1, 1), 2)])
def test_entropy_equals_scikit_image(shape, radius):
    rng = np.random.default_rng(radius)
    image = rng.integers(0, 256, shape).astype(np.uint8)
    image[: shape[0] // 2] = rng.integers(0, 3, (shape[0] // 2, shape[1]))  # low-entropy half
    np.testing.assert_allclose(local_entropy(image, radius), entropy(image, disk(radius)), atol=1e-9)


def test_entropy_of_a_constant_image_is_zero():
    assert local_entropy(np.full((10, 12), 7, np.uint8), 3).max() == 0.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius", [2, 7, 20])
def test_closing_equals_scikit_image(seed, radius):
    rng = np.random.default_rng(seed)
    mask = rng.random((45, 38)) < 0.03
    mask[:, :2] |= rng.random((45, 2)) < 0.3  # foreground at the border
    np.testing.assert_array_equal(binary_closing_disk(mask, radius), binary_closing(mask, disk(radius)))


def test_closing_with_the_configured_radius_on_a_bscan_sized_mask():
    rng = np.random.default_rng(5)
    mask = np.zeros((300, 200), bool)
    mask[80:220, 10:190] = rng.random((140, 180)) < 0.2  # a speckled band, gaps far wider than the pixels
    mask[:, :3] |= rng.random((300, 3)) < 0.3  # and foreground at the border
    np.testing.assert_array_equal(binary_closing_disk(mask, config.CLOSING_DISK_RADIUS),
                                  binary_closing(mask, disk(config.CLOSING_DISK_RADIUS)))


def test_closing_of_empty_and_full_masks():
    assert not binary_closing_disk(np.zeros((5, 6), bool), 3).any()
    assert binary_closing_disk(np.ones((5, 6), bool), 3).all()


def test_fill_columns():
    mask = np.array([[0, 1, 0], [0, 0, 0], [1, 1, 0], [0, 0, 0]], bool)
    expected = np.array([[0, 1, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    np.testing.assert_array_equal(fill_columns(mask), expected)


@pytest.mark.parametrize("seed", range(3))
def test_roi_mask_equals_the_straightforward_implementation(seed):
    rng = np.random.default_rng(seed)
    bscan = (rng.random((90, 70)) * 100).astype(np.uint8)  # dark noise: no entropy above mid-grey
    bscan[30:60] = 140 + (rng.random((30, 70)) * 100).astype(np.uint8)  # bright textured 'retina'
    fluid = np.zeros((90, 70), np.uint8)
    fluid[70:75, 10:20] = 2  # fluid outside the textured band still belongs to the ROI
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = roi_mask_reference(bscan, fluid, 5, 1e-2, 12)
    got = roi_mask(bscan, fluid, 5, 1e-2, 12)
    np.testing.assert_array_equal(got, expected)
    assert got[45].all() and not got[5].any() and got[72, 15]
    np.testing.assert_array_equal(roi_mask(bscan, None, 5, 1e-2, 12),
                                  roi_mask_reference(bscan, None, 5, 1e-2, 12))
