"""Fluid overlays: a grey B-scan with each fluid's pixels tinted by its colour (:data:`FLUID_COLOURS`, the one place
colours are defined: the overlay PNGs, the reports and the label tables take them from here)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FLUID_COLOURS = {"IRF": (255, 0, 0), "SRF": (0, 255, 0), "PED": (0, 96, 255)}  # overlay colour of each fluid
OVERLAY_ALPHA = 0.45  # opacity of the fluid colours over the grey B-scan


def overlay_indices(n_bscans: int, count: int | None) -> list[int]:
    """B-scans to draw: ``count`` of them evenly spread from first to last (all when ``count`` is None or larger)."""
    if count is None or count >= n_bscans:
        return list(range(n_bscans))
    return sorted({int(round(v)) for v in np.linspace(0, n_bscans - 1, max(1, count))})


def overlay_bscan(bscan: np.ndarray, labels: np.ndarray, fluids: Mapping[str, int],
                  colours: Mapping[str, tuple[int, int, int]] = FLUID_COLOURS, alpha: float = OVERLAY_ALPHA,
                  ) -> np.ndarray:
    """A grey B-scan with each fluid's pixels tinted by its colour.

    Args:
        bscan: ``(H, W)`` uint8 grey values.
        labels: ``(H, W)`` integer labels.
        fluids: fluid name -> label code; fluids without a colour are not drawn.
        colours: fluid name -> RGB.
        alpha: colour opacity in [0, 1].

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    rgb = np.repeat(bscan[..., None], 3, axis=2).astype(np.float32)
    for name, code in fluids.items():
        if name in colours:
            where = labels == code
            rgb[where] = (1 - alpha) * rgb[where] + alpha * np.asarray(colours[name], np.float32)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
