"""Fluid volume per ETDRS subfield, centred on the fovea.

The ETDRS grid lies on the en-face plane of a volume: the B-scan width (x, columns) by the B-scan index (z), in mm
from the header spacing (``spacing_mm[0]`` between A-scans, ``spacing_mm[2]`` between B-scans; arrays are
``(z, y, x)``). Three circles of ``ETDRS_DIAMETERS_MM`` (1, 3 and 6 mm) around the fovea make the central disc
(radius < 0.5 mm), the inner ring (0.5-1.5 mm) and the outer ring (1.5-3 mm); the diagonals cut each ring into four
quadrants. Each A-scan belongs wholly to the subfield holding its centre; a fluid's volume in a subfield is its voxel
count in those A-scans x the voxel volume. A-scans beyond 3 mm count in no subfield.

**Quadrant names.** Every volume gets its quadrants named by image direction, as the report draws the en-face
maps (B-scan 0 at the top, A-scan column 0 at the left):

- ``top``: toward B-scan 0 (smaller z), ``bottom``: toward the last B-scan (larger z);
- ``left``: toward column 0 of each B-scan (smaller x), ``right``: toward its last column (larger x).

A point on a diagonal (``|dx| == |dz|``) counts as top or bottom. When the laterality is known (vendor files hold
it: ``R`` right eye, ``L`` left eye; a MetaImage volume's is unknown), the horizontal quadrants are also given as
``nasal`` and ``temporal`` (:data:`NASAL_SIDE`): the nasal side (toward the optic disc) is the right of a right
eye's fundus image and the left of a left eye's, and the A-scan columns are taken to run left to right in that
view. For ``.vol`` and XML exports the B-scans' positions are checked (utils/io/vendor_files.py gives no
laterality otherwise); for the other formats it is assumed, as in a horizontal macular cube, the devices' default
(not checked on device files here). Which end of the B-scan stack is superior differs between vendors and scan
patterns, so top and bottom keep their image names.

**Fovea.** :func:`find_fovea`: the lowest point (largest depth) of the inner retinal surface within
``FOVEA_SEARCH_RADIUS_MM`` of the scan centre, where the surface is the first row of each A-scan at least halfway
between the B-scan's median and its 99th percentile of intensity after a small Gaussian blur
(:func:`inner_surface_rows`). It falls back to the scan centre, and says so, when the surface is missing over
half the search disc, when the pit is less than ``FOVEA_MIN_DEPTH_MM`` deeper than the surface at the edge of the
search disc, or when the lowest point lies on that edge (the surface still descends: no pit inside).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from utils.io.mhd_io import Geometry
from utils.io.tables import subfield_column

QUADRANTS = ("top", "right", "bottom", "left")  # by image direction: see the module docstring
RINGS = ("inner", "outer")
SUBFIELDS = ("central",) + tuple(f"{ring}_{quadrant}" for ring in RINGS for quadrant in QUADRANTS)
NASAL_SIDE = {"R": "right", "L": "left"}  # laterality -> the image side (a QUADRANTS name) that is nasal
SIDES = ("nasal", "temporal")
ANATOMICAL_SUBFIELDS = tuple(f"{ring}_{side}" for ring in RINGS for side in SIDES)  # filled when laterality known
FOUND_BY_SURFACE = "inner_surface"  # fovea_found_by: the lowest point of the inner retinal surface
FOUND_BY_CENTRE = "scan_centre"  # fovea_found_by: no pit found, the scan centre used
SURFACE_BLUR_PX = 2.0  # Gaussian sigma (pixels, depth and width) before the surface threshold
SURFACE_SMOOTH_PX = 5  # median along each B-scan of the surface rows, against speckle
EDGE_SHARE = 0.8  # the search disc's edge: A-scans beyond this share of its radius


@dataclasses.dataclass(frozen=True)
class Fovea:
    """Where the ETDRS grid is centred.

    Attributes:
        bscan: B-scan index z of the centre (fractional for the scan centre of an even count).
        column: A-scan column x of the centre (likewise).
        found_by: ``FOUND_BY_SURFACE`` or ``FOUND_BY_CENTRE``.
    """

    bscan: float
    column: float
    found_by: str


def scan_centre(shape: Sequence[int]) -> Fovea:
    """The centre of a ``(z, y, x)`` volume's en-face plane: ``((z - 1) / 2, (x - 1) / 2)``."""
    return Fovea((shape[0] - 1) / 2, (shape[2] - 1) / 2, FOUND_BY_CENTRE)


def _en_face_offsets_mm(n_bscans: int, width: int, geometry: Geometry, bscan: float, column: float
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(dz_mm, dx_mm)``, each ``(z, x)`` float64: the en-face distance of every A-scan from ``(bscan, column)``."""
    dz = (np.arange(n_bscans) - bscan)[:, None] * geometry.spacing_mm[2]
    dx = (np.arange(width) - column)[None, :] * geometry.spacing_mm[0]
    return np.broadcast_to(dz, (n_bscans, width)), np.broadcast_to(dx, (n_bscans, width))


def inner_surface_rows(bscan: np.ndarray) -> np.ndarray:
    """The inner retinal surface of one B-scan: the first row of each A-scan that is bright enough.

    Args:
        bscan: ``(y, x)`` grey values (the preprocessed uint8 B-scan), depth growing with y.

    Returns:
        ``(x,)`` float64 row of the surface per A-scan (NaN where no row qualifies): the first row whose blurred
        value is at least halfway between the blurred B-scan's median (background) and 99th percentile (the bright
        retina), median-filtered along the B-scan.
    """
    blurred = ndimage.gaussian_filter(bscan.astype(np.float32), SURFACE_BLUR_PX)
    low, high = np.percentile(blurred, [50, 99])
    if high - low < 1e-3:
        return np.full(bscan.shape[1], np.nan)
    bright = blurred >= (low + high) / 2
    rows = np.where(bright.any(axis=0), bright.argmax(axis=0), -1).astype(np.float64)
    filled = ndimage.median_filter(rows, SURFACE_SMOOTH_PX, mode="nearest")
    filled[filled < 0] = np.nan
    return filled


def find_fovea(volume: np.ndarray, geometry: Geometry, search_radius_mm: float, min_depth_mm: float) -> Fovea:
    """The fovea of a volume (module docstring), or its scan centre when no pit is found.

    Args:
        volume: ``(z, y, x)`` grey values, depth growing with y.
        geometry: the header geometry; spacing ``(x, y, z)`` in mm.
        search_radius_mm: A-scans within this en-face distance of the scan centre are searched (> 0).
        min_depth_mm: how much deeper than the surface at the search disc's edge the pit must lie (>= 0).

    Returns:
        :class:`Fovea` at an A-scan (``found_by = FOUND_BY_SURFACE``), or :func:`scan_centre`.
    """
    n_bscans, _, width = volume.shape
    centre = scan_centre(volume.shape)
    dz, dx = _en_face_offsets_mm(n_bscans, width, geometry, centre.bscan, centre.column)
    distance = np.hypot(dz, dx)
    inside = distance <= search_radius_mm
    bscans = np.flatnonzero(inside.any(axis=1))
    depth_mm = np.full((n_bscans, width), np.nan)
    for z in bscans:
        depth_mm[z] = inner_surface_rows(volume[z]) * geometry.spacing_mm[1]
    searched = np.where(inside, depth_mm, np.nan)
    if not inside.any() or np.isnan(searched[inside]).mean() > 0.5:
        return centre
    z, x = np.unravel_index(np.nanargmax(searched), searched.shape)
    edge = inside & (distance > EDGE_SHARE * search_radius_mm)
    edge_depth = np.nanmedian(searched[edge]) if np.isfinite(searched[edge]).any() else np.nan
    if edge[z, x] or not np.isfinite(edge_depth) or searched[z, x] - edge_depth < min_depth_mm:
        return centre
    return Fovea(float(z), float(x), FOUND_BY_SURFACE)


def subfield_map(n_bscans: int, width: int, geometry: Geometry, fovea: Fovea,
                 diameters_mm: Sequence[float] = (1.0, 3.0, 6.0)) -> np.ndarray:
    """The ETDRS subfield of every A-scan.

    Args:
        n_bscans, width: the en-face size ``(z, x)``.
        geometry: spacing ``(x, y, z)`` in mm (x and z used).
        fovea: the grid's centre.
        diameters_mm: the three circles, increasing (``ETDRS_DIAMETERS_MM``).

    Returns:
        ``(z, x)`` int8: the index into ``SUBFIELDS`` of each A-scan, -1 outside the outer circle.

    Raises:
        ValueError: diameters that are not three increasing positive numbers.
    """
    diameters = [float(d) for d in diameters_mm]
    if len(diameters) != 3 or not 0 < diameters[0] < diameters[1] < diameters[2]:
        raise ValueError(f"ETDRS_DIAMETERS_MM must be three increasing positive diameters in mm, got {diameters_mm!r}")
    dz, dx = _en_face_offsets_mm(n_bscans, width, geometry, fovea.bscan, fovea.column)
    radius = np.hypot(dz, dx)
    # QUADRANTS order: top (dz < 0), right (dx > 0), bottom (dz > 0), left (dx < 0); diagonals go to top/bottom
    quadrant = np.where(np.abs(dx) > np.abs(dz), np.where(dx > 0, 1, 3), np.where(dz < 0, 0, 2))
    ring = np.digitize(radius, [d / 2 for d in diameters])  # 0 central, 1 inner, 2 outer, 3 outside
    index = np.where(ring == 0, 0, 1 + (ring - 1) * len(QUADRANTS) + quadrant)
    return np.where(ring >= 3, -1, index).astype(np.int8)


def subfield_volumes_mm3(labels: np.ndarray, geometry: Geometry, fovea: Fovea, fluids: Mapping[str, int],
                         diameters_mm: Sequence[float] = (1.0, 3.0, 6.0)) -> dict[str, dict[str, float]]:
    """Each fluid's volume in each ETDRS subfield.

    Args:
        labels: ``(z, y, x)`` integer label codes.
        geometry: the volume's geometry (voxel volume and en-face spacing from the header).
        fovea: the grid's centre (:func:`find_fovea`).
        fluids: fluid name -> label code (``FLUIDS``).
        diameters_mm: as :func:`subfield_map`.

    Returns:
        fluid -> subfield (``SUBFIELDS``) -> volume in mm³ (0.0 where absent).
    """
    fields = subfield_map(labels.shape[0], labels.shape[2], geometry, fovea, diameters_mm)
    volumes = {}
    for name, code in fluids.items():
        per_ascan = np.count_nonzero(labels == code, axis=1)  # (z, x) voxels of this fluid per A-scan
        counts = np.bincount(fields[fields >= 0], weights=per_ascan[fields >= 0], minlength=len(SUBFIELDS))
        volumes[name] = {field: float(counts[i]) * geometry.voxel_volume_mm3 for i, field in enumerate(SUBFIELDS)}
    return volumes


def grid_scanned_fraction(n_bscans: int, width: int, geometry: Geometry, fovea: Fovea,
                          diameters_mm: Sequence[float] = (1.0, 3.0, 6.0)) -> float:
    """Share of the grid's outer disc (area) that the scan covers: A-scans inside it x their en-face area / the
    disc's area, at most 1. Below 1, the outer (and maybe inner) subfields are only partly measured."""
    fields = subfield_map(n_bscans, width, geometry, fovea, diameters_mm)
    area_mm2 = np.count_nonzero(fields >= 0) * geometry.spacing_mm[0] * geometry.spacing_mm[2]
    return float(min(1.0, area_mm2 / (np.pi * (float(diameters_mm[2]) / 2) ** 2)))


def side_names(laterality: str) -> dict[str, str]:
    """``"nasal"`` and ``"temporal"`` (in ``SIDES`` order) -> the image side (``"left"``/``"right"``) each lies on
    for a laterality ``R``/``L``; empty for an unknown one (``""``)."""
    nasal = NASAL_SIDE.get(laterality)
    if nasal is None:
        return {}
    return {"nasal": nasal, "temporal": ({"left", "right"} - {nasal}).pop()}


def anatomical_volumes(by_image: Mapping[str, float], laterality: str) -> dict[str, float | str]:
    """One fluid's ``ANATOMICAL_SUBFIELDS`` volumes from its volumes by image direction (``SUBFIELDS`` -> mm³):
    the horizontal quadrants renamed by :func:`side_names`, or ``""`` (unknown) for each when the laterality is
    unknown."""
    sides = side_names(laterality)
    if not sides:
        return dict.fromkeys(ANATOMICAL_SUBFIELDS, "")
    return {f"{ring}_{name}": by_image[f"{ring}_{side}"] for ring in RINGS for name, side in sides.items()}


def etdrs_columns(fluids: Sequence[str]) -> list[str]:
    """The ``volumes.csv`` columns :func:`etdrs_row` fills: the fovea's ``fovea_bscan``, ``fovea_column``,
    ``fovea_found_by``, ``etdrs_scanned_fraction``, ``laterality`` (``R``, ``L`` or empty), then
    ``<fluid>_<subfield>_mm3`` for each fluid and subfield of ``SUBFIELDS`` (image directions) and of
    ``ANATOMICAL_SUBFIELDS`` (nasal/temporal: empty when the laterality is unknown)."""
    return (["fovea_bscan", "fovea_column", "fovea_found_by", "etdrs_scanned_fraction", "laterality"]
            + [subfield_column(fluid, field) for fluid in fluids for field in SUBFIELDS + ANATOMICAL_SUBFIELDS])


def etdrs_row(volume: np.ndarray, labels: np.ndarray, geometry: Geometry, fluids: Mapping[str, int],
              diameters_mm: Sequence[float], fovea_search_radius_mm: float, fovea_min_depth_mm: float,
              laterality: str = "") -> dict:
    """The ETDRS columns of one case (:func:`etdrs_columns`).

    Args:
        volume: ``(z, y, x)`` preprocessed grey volume (the fovea is found in it).
        labels: ``(z, y, x)`` label codes, the same shape.
        geometry: their geometry.
        fluids: fluid name -> label code (``FLUIDS``).
        diameters_mm: the grid's three circles (``ETDRS_DIAMETERS_MM``).
        fovea_search_radius_mm, fovea_min_depth_mm: :func:`find_fovea`'s (``FOVEA_SEARCH_RADIUS_MM``,
            ``FOVEA_MIN_DEPTH_MM``).
        laterality: ``"R"``, ``"L"`` (from a vendor file) or ``""`` (unknown).
    """
    fovea = find_fovea(volume, geometry, fovea_search_radius_mm, fovea_min_depth_mm)
    volumes = subfield_volumes_mm3(labels, geometry, fovea, fluids, diameters_mm)
    row = {"fovea_bscan": fovea.bscan, "fovea_column": fovea.column, "fovea_found_by": fovea.found_by,
           "etdrs_scanned_fraction": grid_scanned_fraction(labels.shape[0], labels.shape[2], geometry, fovea,
                                                           diameters_mm),
           "laterality": laterality if laterality in NASAL_SIDE else ""}
    for fluid, fields in volumes.items():
        fields = {**fields, **anatomical_volumes(fields, row["laterality"])}
        row.update({subfield_column(fluid, field): value for field, value in fields.items()})
    return row
