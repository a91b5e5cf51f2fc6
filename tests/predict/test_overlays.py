"""utils/predict/overlays.py: fluid colours over a grey B-scan, and which B-scans are drawn."""

import numpy as np

import config
from utils.predict import overlays


def test_overlay_colours_fluid_pixels_only():
    bscan = np.full((2, 3), 100, np.uint8)
    labels = np.array([[0, config.IRF, config.SRF], [config.PED, 0, 0]], np.uint8)
    rgb = overlays.overlay_bscan(bscan, labels, config.FLUIDS, alpha=1.0)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [100, 100, 100]
    assert rgb[0, 1].tolist() == list(overlays.FLUID_COLOURS["IRF"])
    assert rgb[1, 0].tolist() == list(overlays.FLUID_COLOURS["PED"])
    assert overlays.overlay_indices(10, 3) == [0, 4, 9]
    assert overlays.overlay_indices(4, None) == [0, 1, 2, 3] and overlays.overlay_indices(4, 9) == [0, 1, 2, 3]
