"""Which vendor a path or a volume's type and size names (vendor names as in ``config.VENDORS``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

# Default B-scan heights (pixels) of each vendor's uint8 volumes, used only when the path names no vendor.
_UINT8_HEIGHTS = {1024: "Cirrus", 885: "Topcon", 650: "Topcon"}


def vendor_from_path(path: str | Path, vendors: Sequence[str]) -> str | None:
    """The vendor of ``vendors`` named by the nearest folder of ``path`` (case-insensitive), or None."""
    for part in reversed(Path(path).parts):
        for vendor in vendors:
            if vendor.lower() in part.lower():
                return vendor
    return None


def vendor_from_array(dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
    """The vendor a volume's dtype and ``(z, y, x)`` size suggest, or None if they fit no vendor."""
    if np.dtype(dtype) == np.uint16:
        return "Spectralis"
    if np.dtype(dtype) == np.uint8 and len(shape) == 3:
        return _UINT8_HEIGHTS.get(int(shape[1]))
    return None
