"""Tiny RETOUCH-layout volumes for tests (imported by conftest.py and test modules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.io.mhd_io import Geometry, write_volume

TINY_SPECS = {  # vendor: ((z, y, x), dtype, spacing (x, y, z) mm)
    "Cirrus": ((5, 48, 32), np.uint8, (0.047, 0.0417, 0.047)),
    "Spectralis": ((4, 40, 32), np.uint16, (0.045, 0.0474, 0.12)),
    "Topcon": ((5, 44, 32), np.uint8, (0.047, 0.0523, 0.047)),
}


def tiny_volume(vendor: str, rng: np.random.Generator) -> np.ndarray:
    """A bright noisy band (the 'retina') on a dark noisy background, in the vendor's dtype."""
    shape, dtype, _ = TINY_SPECS[vendor]
    top = shape[1] // 3
    volume = rng.random(shape, dtype=np.float32) * 0.3
    volume[:, top:2 * top] += 0.6
    return (volume * np.iinfo(dtype).max).astype(dtype)


def write_case(folder: Path, vendor: str, rng: np.random.Generator, fluid_code: int | None = 1,
               with_reference: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Writes ``folder/oct.mhd`` (+ ``reference.mhd`` with a small block of ``fluid_code``); returns the arrays."""
    shape, _, spacing = TINY_SPECS[vendor]
    geometry = Geometry(spacing_mm=spacing, origin_mm=(1.0, 2.0, 3.0))
    volume = tiny_volume(vendor, rng)
    write_volume(folder / "oct.mhd", volume, geometry)
    labels = None
    if with_reference:
        labels = np.zeros(shape, np.uint8)
        if fluid_code:
            labels[1:3, shape[1] // 2:shape[1] // 2 + 4, 8:16] = fluid_code
        write_volume(folder / "reference.mhd", labels, geometry)
    return volume, labels
