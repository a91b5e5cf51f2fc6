import numpy as np
import pytest
from scipy import ndimage
from skimage.exposure import match_histograms

from utils.prepare.preprocessing import (PreprocessSettings, histogram_matching_lut, intensity_histogram,
                                         match_histogram, median_across_bscans, median_inplane, preprocess_volume,
                                         to_uint8_intensity)


def test_spectralis_scaled_as_the_method():
    volume = np.array([[[0, 255, 256, 32768, 65535]]], dtype=np.uint16)
    np.testing.assert_array_equal(to_uint8_intensity(volume)[0, 0], [0, 0, 0, 127, 254])
    cirrus = np.array([[[0, 17, 255]]], dtype=np.uint8)
    assert to_uint8_intensity(cirrus) is cirrus


def test_other_dtypes_rejected():
    with pytest.raises(ValueError, match="oct.mhd: OCT voxels are float32"):
        to_uint8_intensity(np.zeros((1, 2, 2), np.float32), "oct.mhd")


@pytest.mark.parametrize("seed", range(4))
def test_histogram_matching_equals_scikit_image(seed):
    rng = np.random.default_rng(seed)
    source = rng.gamma(2.0, 25.0, (3, 20, 30)).clip(0, 255).astype(np.uint8)
    reference = rng.normal(90, 40, (2, 25, 30)).clip(0, 255).astype(np.uint8)
    matched = match_histograms(source, reference)
    rounded = np.clip(np.rint(matched), 0, 255).astype(np.uint8)
    truncated = np.clip(np.floor(matched + 1e-9), 0, 255).astype(np.uint8)  # the original's astype
    np.testing.assert_array_equal(match_histogram(source, intensity_histogram(reference), "round"), rounded)
    np.testing.assert_array_equal(match_histogram(source, intensity_histogram(reference)), truncated)
    assert (rounded != truncated).any()  # the two settings differ on this data


def test_matched_histogram_follows_the_reference():
    rng = np.random.default_rng(0)
    source = rng.integers(0, 80, (4, 50, 50)).astype(np.uint8)
    reference = rng.integers(100, 250, (4, 50, 50)).astype(np.uint8)
    matched = match_histogram(source, intensity_histogram(reference))
    assert abs(matched.mean() - reference.mean()) < 2.0
    assert histogram_matching_lut(intensity_histogram(source), intensity_histogram(reference)).dtype == np.uint8


def test_median_across_bscans_keeps_edges_and_takes_the_median_inside():
    rng = np.random.default_rng(1)
    volume = rng.integers(0, 256, (6, 5, 4)).astype(np.uint8)
    out = median_across_bscans(volume, 3)
    np.testing.assert_array_equal(out[0], volume[0])
    np.testing.assert_array_equal(out[-1], volume[-1])
    np.testing.assert_array_equal(out[1:-1], np.median(np.stack([volume[:-2], volume[1:-1], volume[2:]]), axis=0))
    np.testing.assert_array_equal(out, ndimage.median_filter(volume, size=(3, 1, 1), mode="reflect"))
    np.testing.assert_array_equal(median_across_bscans(volume, 5),
                                  ndimage.median_filter(volume, size=(5, 1, 1), mode="reflect"))
    with pytest.raises(ValueError, match="must be odd"):
        median_across_bscans(volume, 4)


def test_median_inplane_is_per_bscan():
    volume = np.zeros((2, 5, 5), np.uint8)
    volume[0, 2, 2] = 255  # an isolated speck disappears; B-scan 1 is not touched by B-scan 0
    volume[1] = 100
    out = median_inplane(volume, 3)
    assert out[0].max() == 0 and (out[1] == 100).all()


def test_cirrus_gets_the_cross_bscan_median_the_original_skipped():
    rng = np.random.default_rng(2)
    volume = rng.integers(0, 256, (5, 12, 12)).astype(np.uint8)
    reference = intensity_histogram(volume)  # matching to itself is the identity
    out = preprocess_volume(volume, "Cirrus", reference, PreprocessSettings(median_inplane=1))
    np.testing.assert_array_equal(out, median_across_bscans(volume, 3))
    assert not np.array_equal(out, volume)


def test_spectralis_is_neither_matched_nor_filtered():
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 65535, (3, 8, 8)).astype(np.uint16)
    out = preprocess_volume(volume, "Spectralis", None, PreprocessSettings())
    np.testing.assert_array_equal(out, to_uint8_intensity(volume))


def test_matching_needs_a_reference():
    with pytest.raises(ValueError, match="no reference histogram"):
        preprocess_volume(np.zeros((1, 4, 4), np.uint8), "Topcon", None, PreprocessSettings(), "x/oct.mhd")


@pytest.mark.parametrize("labels, found", [
    (np.array([-1, 0, 1], np.int8), "-1"),  # astype(uint8) made this 255
    (np.array([0.0, 1.5, 2.0], np.float32), "dtype float32"),  # astype(uint8) made this 1
    (np.array([0, 7, 1], np.uint8), "7"),
])
def test_reference_with_other_codes_is_refused(tmp_path, labels, found):
    from utils.io.cases import Case
    from utils.io.mhd_io import Geometry, VolumeError, write_volume
    from utils.prepare.preprocessing import preprocess_case

    geometry = Geometry((1.0, 1.0, 1.0))
    write_volume(tmp_path / "Cirrus" / "C1" / "oct.mhd", np.full((3, 4, 5), 9, np.uint8), geometry)
    reference = np.zeros((3, 4, 5), labels.dtype)
    reference[:, 0, :3] = labels
    write_volume(tmp_path / "Cirrus" / "C1" / "reference.mhd", reference, geometry)
    folder = tmp_path / "Cirrus" / "C1"
    case = Case("C1", "Spectralis", folder / "oct.mhd", folder / "reference.mhd")
    with pytest.raises(VolumeError, match=rf"reference\.mhd: .*{found}"):
        preprocess_case(case, tmp_path / "work", PreprocessSettings(), None)
    assert not (tmp_path / "work" / "slices" / "C1" / "preprocess.json").exists()


@pytest.mark.parametrize("shape", [(3, 40, 30), (2, 3, 3), (1, 1, 7), (2, 5, 1)])
def test_inplane_median_is_scipys_bit_for_bit(shape):
    from scipy import ndimage

    volume = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    volume[:, 0] = 255  # a bright edge row: the border rule matters there
    expected = ndimage.median_filter(volume, size=(1, 3, 3), mode="reflect")
    np.testing.assert_array_equal(median_inplane(volume, 3), expected)
    np.testing.assert_array_equal(median_inplane(volume.astype(np.uint16), 3), expected)  # the scipy path


def test_intensity_histogram_counts_exactly_beyond_float32():
    rng = np.random.default_rng(3)
    volume = rng.integers(0, 256, (7, 33, 29), dtype=np.uint8)
    np.testing.assert_array_equal(intensity_histogram(volume), np.bincount(volume.ravel(), minlength=256))
    zeros = np.zeros((2 ** 25 + 3,), np.uint8)  # one bin above 2**24, where float32 counting would round
    counts = intensity_histogram(zeros)
    assert counts[0] == 2 ** 25 + 3 and counts.dtype == np.int64
    assert not intensity_histogram(np.zeros((0, 5), np.uint8)).any()
