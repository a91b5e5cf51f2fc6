"""Post-processing of predicted label volumes beyond the method (all off by default): removing a fluid the volume's
presence score says is absent, closing each fluid's gaps within a B-scan, and removing connected fluid components
smaller than a physical volume.

The first and last target the stray voxels that score Dice 0 in volumes without that fluid (the RETOUCH rule) and
the small false detections along dark retinal layers. The closing draws a cluster of cysts as one region, as
graders who outline the whole oedematous zone do (the Duke DME masks): the network marks the dark cysts and leaves
the tissue between them. Label volumes are ``(z, y, x)`` uint8 codes (0 background).
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


def close_fluids(labels: np.ndarray, fluids: Mapping[str, int], spacing_mm: tuple[float, ...],
                 radius_mm: float) -> np.ndarray:
    """``labels`` with each fluid's gaps closed, B-scan by B-scan: a morphological closing (dilation, then erosion)
    of each fluid's pixels by an ellipse of ``radius_mm`` in both directions of the B-scan (so many pixels of each
    axis as its spacing gives), which joins the fluid's pockets closer than about twice the radius and fills their
    concavities. Only background pixels are added, never another fluid's; a pixel that two fluids' closings both
    claim goes to the nearer fluid (in mm). Per B-scan, because B-scans lie far apart compared with the pixels
    within one (0.05-0.24 mm against 0.004-0.012 mm).

    Args:
        labels: ``(z, y, x)`` integer label codes.
        fluids: fluid name -> label code.
        spacing_mm: the volume's spacing ``(x, y, z)`` in mm (:class:`utils.io.mhd_io.Geometry`).
        radius_mm: the ellipse's radius in mm, >= 0; 0 keeps everything.

    Returns:
        A new array of the same shape and dtype (``labels`` itself when ``radius_mm`` is 0).

    Raises:
        ValueError: a negative radius or a spacing that is not positive.
    """
    if not radius_mm >= 0 or not all(value > 0 for value in spacing_mm[:2]):
        raise ValueError(f"FLUID_CLOSING_MM must be >= 0 and the spacing > 0, got {radius_mm!r} mm and spacing "
                         f"(x, y, z) {tuple(spacing_mm)!r} mm")
    if radius_mm == 0:
        return labels
    sampling = (spacing_mm[1], spacing_mm[0])  # (y, x) mm per pixel
    # padded by the radius (in pixels of each axis), so that the B-scan's edges neither stop the growing nor the
    # shrinking: the closing is the infinite plane's, cut back to the B-scan
    pad_y, pad_x = int(radius_mm / sampling[0]) + 1, int(radius_mm / sampling[1]) + 1
    inner = (slice(pad_y, -pad_y), slice(pad_x, -pad_x))
    out = labels.copy()
    for z, bscan in enumerate(labels):
        claims = []  # (code, distance in mm to the fluid, the background pixels its closing adds)
        for code in fluids.values():
            mask = bscan == code
            if not mask.any():
                continue
            # the closing from two Euclidean distance transforms (exact in mm, as fast for any radius): grown to
            # every pixel within the radius, then shrunk to those farther than the radius from what was not grown
            distance = ndimage.distance_transform_edt(~np.pad(mask, ((pad_y, pad_y), (pad_x, pad_x))),
                                                      sampling=sampling)
            closed = ndimage.distance_transform_edt(distance <= radius_mm, sampling=sampling) > radius_mm
            added = closed[inner] & (bscan == 0)
            if added.any():
                claims.append((code, distance[inner], added))
        if len(claims) == 1:
            code, _, added = claims[0]
            out[z][added] = code
        elif claims:  # each added pixel to the nearest of the fluids that claim it
            distances = np.stack([np.where(added, distance, np.inf) for _, distance, added in claims])
            nearest = distances.argmin(axis=0)
            claimed = np.isfinite(distances.min(axis=0))
            codes = np.array([code for code, _, _ in claims], dtype=labels.dtype)
            out[z][claimed] = codes[nearest[claimed]]
    return out


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
