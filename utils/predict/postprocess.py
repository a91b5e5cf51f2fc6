"""Clean-up of predicted label volumes beyond the method (both off by default): removing a fluid the volume's
presence score says is absent, and removing connected fluid components smaller than a physical volume.

Both target the stray voxels that score Dice 0 in volumes without that fluid (the RETOUCH rule) and the small
false detections along dark retinal layers. Label volumes are ``(z, y, x)`` uint8 codes (0 background).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage


def gate_absent_fluids(labels: np.ndarray, presence: Mapping[str, float], fluids: Mapping[str, int],
                       threshold: float) -> np.ndarray:
    """``labels`` with every fluid whose presence score is below ``threshold`` set to background.

    Args:
        labels: ``(z, y, x)`` integer label codes.
        presence: fluid name -> presence score in [0, 1] (:class:`utils.predict.presence.PresenceScores`).
        fluids: fluid name -> label code (``FLUIDS``).
        threshold: in [0, 1]; 0 keeps everything.

    Returns:
        A new array of the same shape and dtype (``labels`` itself when nothing is removed).
    """
    absent = [code for name, code in fluids.items() if presence.get(name, 1.0) < threshold]
    if not absent:
        return labels
    return np.where(np.isin(labels, absent), 0, labels).astype(labels.dtype)


def remove_small_components(labels: np.ndarray, fluids: Mapping[str, int], voxel_volume_mm3: float,
                            min_volume_mm3: float) -> np.ndarray:
    """``labels`` without the connected components of each fluid smaller than ``min_volume_mm3``.

    Components are 3-D, face-connected (6-neighbourhood), per fluid; their volume is the voxel count times
    ``voxel_volume_mm3`` (from the header spacing).

    Args:
        labels: ``(z, y, x)`` integer label codes.
        fluids: fluid name -> label code.
        voxel_volume_mm3: volume of one voxel, > 0.
        min_volume_mm3: components strictly smaller are set to background; 0 keeps everything.

    Returns:
        A new array of the same shape and dtype (``labels`` itself when ``min_volume_mm3`` is 0).

    Raises:
        ValueError: a voxel volume that is not positive or a negative minimum.
    """
    if not voxel_volume_mm3 > 0 or not min_volume_mm3 >= 0:
        raise ValueError(f"voxel volume must be > 0 and MIN_COMPONENT_MM3 >= 0, got {voxel_volume_mm3!r} and "
                         f"{min_volume_mm3!r} mm³")
    if min_volume_mm3 == 0:
        return labels
    out = labels.copy()
    min_voxels = min_volume_mm3 / voxel_volume_mm3
    for code in fluids.values():
        components, count = ndimage.label(labels == code)
        if count == 0:
            continue
        sizes = np.bincount(components.ravel())
        small = np.flatnonzero(sizes < min_voxels)
        small = small[small > 0]
        out[np.isin(components, small)] = 0
    return out
