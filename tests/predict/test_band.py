"""utils/predict/band.py: where the test-time band lies in a B-scan."""

import numpy as np

from utils.predict import band


def test_band_is_centred_on_the_roi_middle_and_kept_inside():
    roi = np.zeros((100, 8), bool)
    roi[40:61] = True  # rows 40..60: middle 50
    assert band.band_top(roi, band=20, scaled=100, height=100) == 40
    assert band.band_top(roi, band=20, scaled=50, height=100) == 15  # middle 25 at half the depth
    roi[:] = False
    roi[90:] = True
    assert band.band_top(roi, band=20, scaled=100, height=100) == 80  # kept inside the B-scan
    assert band.band_top(np.zeros((100, 8), bool), band=20, scaled=100, height=100) == 40  # empty: middle
