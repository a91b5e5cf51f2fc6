"""Shared fixtures: tiny RETOUCH-layout volumes written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from volume_factory import TINY_SPECS, write_case


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_tree(tmp_path: Path, rng: np.random.Generator) -> Path:
    """``tmp_path/data`` in the official layout: 3 cases per vendor, fluids 1/2/3 and one without fluid each."""
    root = tmp_path / "data"
    number = 1
    for vendor in TINY_SPECS:
        for fluid_code in (1, None, 2 if vendor != "Topcon" else 3):
            write_case(root / f"RETOUCH-TrainingSet-{vendor}" / f"TRAIN{number:03d}", vendor, rng, fluid_code)
            number += 1
    return root
