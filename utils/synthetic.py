"""Synthetic RETOUCH-like OCT volumes with fluid labels: the project's built-in data set.

The generator draws, per volume, a curved layered retina (vitreous, ten neuroretinal layers, a bright RPE band,
Bruch's membrane, a textured choroid fading with depth, vessel shadows) and puts the three RETOUCH fluids where the
anatomy has them:

- IRF (``config.IRF``): dark ellipsoidal cysts inside the neuroretina, which thicken it;
- SRF (``config.SRF``): a dark dome between the photoreceptors and the RPE, lifting the neuroretina;
- PED (``config.PED``): the RPE raised into a dome over dark (serous) or medium (fibrovascular) content.

Every fluid is a 3-D blob in mm that spans several adjacent B-scans at the vendors' own B-scan spacing, and its
label covers exactly the voxels drawn as fluid. Reflectivity is then multiplied by speckle and log-compressed the
way each vendor does it, so that the vendors' intensity distributions differ as in the real data (Cirrus: bright
noisy background, Topcon: dark and low contrast, uint8; Spectralis: averaged, little speckle, high dynamic range
over the whole uint16 range).

All anatomy is drawn in mm (axial spacing included), so away from the fovea a retina is ~0.25-0.35 mm thick on
every vendor and at any sampling; the same settings and seed give the same bytes. Arrays are ``(z, y, x)`` =
(B-scan, depth, width); spacing and extents are SimpleITK ``(x, y, z)`` in mm.

Usage::

    python -m utils.synthetic --out work/synthetic_retouch  # config.py's SYNTHETIC_CASES_PER_VENDOR full-size cases
                                                            # per vendor (--cases-per-vendor N for another number)
    python -m utils.synthetic --out /tmp/tiny --small       # tiny volumes for tests
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

import config
from utils.io.cases import OCT_FILE, REFERENCE_FILE
from utils.io.files import atomic_write_text
from utils.io.mhd_io import Geometry, write_volume

CIRRUS, SPECTRALIS, TOPCON = config.VENDORS  # alphabetical: the order in which RETOUCH numbers its cases


@dataclasses.dataclass(frozen=True)
class VolumeSpec:
    """Size, voxel type and spacing of an OCT volume.

    Attributes:
        shape: ``(z, y, x)`` = (B-scans, rows of a B-scan (depth), A-scans per B-scan).
        dtype: numpy type of the OCT voxels (uint8 or uint16).
        spacing_mm: SimpleITK order ``(x, y, z)``: A-scan spacing, axial (row) spacing, B-scan spacing, in mm.
    """

    shape: tuple[int, int, int]
    dtype: np.dtype
    spacing_mm: tuple[float, float, float]

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        """``(x, y, z)`` in mm: B-scan width, B-scan depth, and distance covered by the B-scans."""
        return tuple(float(n * s) for n, s in zip(self.shape[::-1], self.spacing_mm))

    def resized(self, n_bscans: int | None = None, scale: float = 1.0) -> VolumeSpec:
        """The same physical extent sampled more coarsely (or finely).

        Args:
            n_bscans: B-scans of the new volume; None keeps the count.
            scale: factor on the B-scan height and width in pixels (e.g. 0.25 for tests); spacing grows to match.

        Returns:
            A spec whose ``extent_mm`` equals this one's (up to rounding of the pixel counts).

        Raises:
            ValueError: ``n_bscans`` < 1 or ``scale`` <= 0.
        """
        if n_bscans is not None and n_bscans < 1:
            raise ValueError(f"n_bscans must be >= 1, got {n_bscans}")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        z, y, x = self.shape
        shape = (n_bscans or z, max(1, round(y * scale)), max(1, round(x * scale)))
        extent = self.extent_mm
        spacing = tuple(e / n for e, n in zip(extent, shape[::-1]))
        return VolumeSpec(shape, self.dtype, spacing)


# Default RETOUCH volumes of each vendor; Topcon has two B-scan heights, used alternately.
VENDOR_SPECS: dict[str, tuple[VolumeSpec, ...]] = {
    CIRRUS: (VolumeSpec((128, 1024, 512), np.dtype(np.uint8), (0.01171875, 0.001953125, 0.046875)),),
    SPECTRALIS: (VolumeSpec((49, 496, 512), np.dtype(np.uint16), (0.011400, 0.003872, 0.121600)),),
    TOPCON: (VolumeSpec((128, 885, 512), np.dtype(np.uint8), (0.011719, 0.002600, 0.046875)),
             VolumeSpec((128, 650, 512), np.dtype(np.uint8), (0.011719, 0.003500, 0.046875))),
}

SMALL_SCALE = 0.25  # --small: B-scan height and width in pixels times this ...
SMALL_N_BSCANS = 8  # ... and this many B-scans (same physical extent)
MAX_BSCANS = 1024  # --bscans above this is refused (a Cirrus case of 1024 B-scans, OCT + reference, is about 1 GB)

_FLUID_NAMES = {code: name for name, code in config.FLUIDS.items()}
_IRF_NAME, _SRF_NAME, _PED_NAME = _FLUID_NAMES[config.IRF], _FLUID_NAMES[config.SRF], _FLUID_NAMES[config.PED]
# The fluids of the i-th case of each vendor (cycled): five of the six hold two or three fluids, the second none;
# each fluid is in 4 of 6 cases, so that a validation or test split of one case per vendor rarely misses a fluid.
# Any 3 cases in a row of one vendor hold every fluid type; the first 3 also hold the case without fluid.
FLUID_PLAN: tuple[tuple[str, ...], ...] = (
    (_IRF_NAME, _SRF_NAME), (), (_IRF_NAME, _PED_NAME), (_SRF_NAME, _PED_NAME),
    (_IRF_NAME, _SRF_NAME, _PED_NAME), (_IRF_NAME, _SRF_NAME, _PED_NAME),
)

MARKER_FILE = "synthetic_retouch.json"  # written at the top of a generated tree: what made it, to rerun safely
FORMAT_VERSION = 2  # bump when the generated volumes change, so that an old tree is not silently extended


# --------------------------------------------------------------------------------------------------------------
# Anatomy (all in mm)
# --------------------------------------------------------------------------------------------------------------
# Neuroretinal layers from the ILM down: (share of the neuroretinal thickness, ILM to the photoreceptor tips, away
# from the fovea; share at the foveal centre; reflectivity relative to the RPE). The inner layers vanish in the
# foveal pit, the ONL thickens.
_LAYERS = (
    (0.13, 0.00, 0.30),  # RNFL
    (0.14, 0.00, 0.06),  # GCL
    (0.10, 0.02, 0.12),  # IPL
    (0.11, 0.04, 0.02),  # INL
    (0.08, 0.06, 0.08),  # OPL
    (0.27, 0.62, 0.01),  # ONL
    (0.02, 0.03, 0.05),  # ELM
    (0.05, 0.07, 0.02),  # inner segments
    (0.04, 0.05, 0.50),  # ellipsoid zone
    (0.06, 0.11, 0.03),  # outer segments
)
_FLUID_REFLECTIVITY = 0.0005  # clear fluid, -33 dB: below Cirrus's and Topcon's noise floor, above Spectralis's
_RPE_REFLECTIVITY = 1.0
_BRUCH_REFLECTIVITY = 0.5
_BRUCH_MM = 0.006  # Bruch's membrane, visible as a thin line under a PED
_IRF_BAND = (0.06, 0.15)  # cysts stay this share of the thickness below the ILM and above the SRF/RPE
_TEXTURE_CELL_MM = (0.06, 0.025, 0.1)  # (x, y, z) grid of the smooth tissue texture (choroidal vessels etc.)
_PED_SHADE_MM = 0.2  # the choroid under a PED of this height is e times darker


@dataclasses.dataclass(frozen=True)
class _Cyst:
    """An IRF cyst: an ellipsoid in (x, z, depth below the ILM), centred at a share of the retinal thickness."""

    x_mm: float
    z_mm: float
    depth_share: float
    semi_axes_mm: tuple[float, float, float]  # (x, y, z)


@dataclasses.dataclass
class _Anatomy:
    """One volume's anatomy: per-A-scan maps ``(Z, X)`` in mm, cysts, and the texture's low-resolution grid."""

    bruch_mm: np.ndarray  # depth of Bruch's membrane (bottom of the RPE, or of a PED)
    ped_height_mm: np.ndarray
    srf_height_mm: np.ndarray
    thickness_mm: np.ndarray  # ILM to the photoreceptor tips (neuroretina, IRF swelling included)
    fovea_weight: np.ndarray  # 1 at the foveal centre, 0 away from it
    shadow: np.ndarray  # signal factor under retinal vessels, 0..1
    cysts: list[_Cyst]
    rpe_mm: float
    ped_reflectivity: float
    choroid_reflectivity: float
    choroid_decay_mm: float
    texture: np.ndarray  # (z, y, x) standard normal values on a _TEXTURE_CELL_MM grid


def _smooth_field(rng: np.random.Generator, x_mm: np.ndarray, z_mm: np.ndarray, amplitude_mm: float,
                  wavelength_mm: tuple[float, float] = (2.0, 8.0), n_waves: int = 4) -> np.ndarray:
    """A smooth random ``(Z, X)`` field: a sum of plane waves of random direction, wavelength and phase."""
    field = np.zeros((z_mm.size, x_mm.size), np.float64)
    for _ in range(n_waves):
        angle, phase = rng.uniform(0, 2 * np.pi, 2)
        k = 2 * np.pi / rng.uniform(*wavelength_mm)
        field += np.cos(k * (np.cos(angle) * x_mm[None, :] + np.sin(angle) * z_mm[:, None]) + phase)
    return field * (amplitude_mm / np.sqrt(n_waves / 2))


def _dome(x_mm: np.ndarray, z_mm: np.ndarray, centre: tuple[float, float], semi_axes: tuple[float, float],
          power: float) -> np.ndarray:
    """``(Z, X)`` profile ``(1 - r^2)^power`` inside the ellipse of ``semi_axes`` (x, z) around ``centre``, else 0."""
    r2 = ((x_mm[None, :] - centre[0]) / semi_axes[0]) ** 2 + ((z_mm[:, None] - centre[1]) / semi_axes[1]) ** 2
    return np.clip(1 - r2, 0, None) ** power


def _sample_anatomy(spec: VolumeSpec, rng: np.random.Generator, fluids: Sequence[str]) -> _Anatomy:
    """Draws one volume's anatomy in mm, as maps over the A-scans of ``spec``: a coarser ``spec`` of the same extent
    gives about the same anatomy, with each lesion centred on the B-scan nearest to its drawn centre."""
    width, depth, length = spec.extent_mm
    dx, _, dz = spec.spacing_mm
    x = np.arange(spec.shape[2]) * dx
    z = np.arange(spec.shape[0]) * dz

    def on_bscan(z_mm: float) -> float:  # lesions centred on a B-scan: even a coarse volume shows each of them
        return float(np.clip(round(z_mm / dz), 0, spec.shape[0] - 1) * dz)

    fovea = (width / 2 + rng.uniform(-0.4, 0.4), length / 2 + rng.uniform(-0.4, 0.4))
    r = np.hypot(x[None, :] - fovea[0], z[:, None] - fovea[1])
    fovea_weight = np.exp(-0.5 * (r / rng.uniform(0.3, 0.45)) ** 2)
    thickness = rng.uniform(0.27, 0.32) - rng.uniform(0.05, 0.09) * fovea_weight
    thickness = thickness * (1 - 0.1 * np.clip((r - 1.5) / 1.5, 0, 1)) + _smooth_field(rng, x, z, 0.008)

    srf = np.zeros_like(thickness)
    ped = np.zeros_like(thickness)
    cysts = []
    ped_reflectivity = _FLUID_REFLECTIVITY
    # Always in the same order, whatever the order of `fluids`: the draws depend only on the seed and the set.
    if _IRF_NAME in fluids:
        centre = (fovea[0] + rng.uniform(-0.6, 0.6), fovea[1] + rng.uniform(-0.6, 0.6))
        for _ in range(rng.integers(2, 7)):
            cyst = _Cyst(x_mm=centre[0] + rng.uniform(-0.7, 0.7), z_mm=on_bscan(centre[1] + rng.uniform(-0.6, 0.6)),
                         depth_share=rng.uniform(0.4, 0.65),
                         semi_axes_mm=(rng.uniform(0.08, 0.3), rng.uniform(0.03, 0.08), rng.uniform(0.15, 0.4)))
            cysts.append(cyst)
            # oedema: the retina around a cyst thickens by 0.6 of its height, over a broad area
            swelling = tuple(max(3 * a, 0.6) for a in cyst.semi_axes_mm[::2])
            thickness += 1.2 * cyst.semi_axes_mm[1] * _dome(x, z, (cyst.x_mm, cyst.z_mm), swelling, 2)
    if _SRF_NAME in fluids:
        centre = (fovea[0] + rng.uniform(-0.7, 0.7), on_bscan(fovea[1] + rng.uniform(-0.7, 0.7)))
        srf = rng.uniform(0.05, 0.22) * _dome(x, z, centre, tuple(rng.uniform(0.5, 1.3, 2)), rng.uniform(0.5, 1.0))
    if _PED_NAME in fluids:
        centre = (fovea[0] + rng.uniform(-1.0, 1.0), on_bscan(fovea[1] + rng.uniform(-1.0, 1.0)))
        semi_axes = tuple(rng.uniform(0.5, 1.2, 2))
        height = min(rng.uniform(0.08, 0.3), 0.35 * min(semi_axes))  # a dome, far wider than high
        ped = height * _dome(x, z, centre, semi_axes, rng.uniform(0.6, 1.0))
        # serous PED (dark) or fibrovascular (medium), always darker than the RPE above and the choroid below
        ped_reflectivity = _FLUID_REFLECTIVITY if rng.random() < 0.5 else rng.uniform(0.005, 0.02)

    # Bruch's membrane: a bowl (the eye's curvature: shallower towards the edges), tilted, with undulations.
    dxf, dzf = x[None, :] - fovea[0], z[:, None] - fovea[1]
    surface = (-rng.uniform(0.008, 0.035) * dxf ** 2 - rng.uniform(0.008, 0.035) * dzf ** 2
               + rng.uniform(-0.04, 0.04) * dxf + rng.uniform(-0.04, 0.04) * dzf + _smooth_field(rng, x, z, 0.015))
    rpe = rng.uniform(0.02, 0.035)
    above = ped + rpe + srf + thickness  # Bruch's membrane to the ILM
    top_margin, choroid_room = 0.12 * depth, 0.45  # vitreous above, choroid below
    room = depth - top_margin - choroid_room - above.max()
    if np.ptp(surface) > room:  # a short Topcon/Spectralis B-scan: flatten the bowl so the retina fits
        surface = (surface - surface.min()) * max(room, 0.0) / np.ptp(surface)
    lowest = top_margin - (surface - above).min()  # shallowest placement with the ILM below top_margin
    highest = depth - choroid_room - surface.max()
    bruch = surface + (rng.uniform(lowest, highest) if highest > lowest else (lowest + highest) / 2)

    shadow = np.ones_like(thickness)
    for _ in range(rng.integers(2, 5)):
        path = rng.uniform(0, width) + rng.uniform(-0.5, 0.5) * (z[:, None] - length / 2)
        shadow *= 1 - rng.uniform(0.3, 0.7) * np.exp(-0.5 * ((x[None, :] - path) / rng.uniform(0.02, 0.05)) ** 2)

    cells = [int(np.ceil(e / c)) + 2 for e, c in zip((length, depth, width), _TEXTURE_CELL_MM[::-1])]
    texture = rng.standard_normal(cells, dtype=np.float32)
    return _Anatomy(bruch_mm=bruch, ped_height_mm=ped, srf_height_mm=srf, thickness_mm=thickness,
                    fovea_weight=fovea_weight, shadow=shadow, cysts=cysts, rpe_mm=rpe,
                    ped_reflectivity=ped_reflectivity, choroid_reflectivity=rng.uniform(0.15, 0.3),
                    choroid_decay_mm=rng.uniform(0.06, 0.1), texture=texture)


# --------------------------------------------------------------------------------------------------------------
# Rendering one B-scan
# --------------------------------------------------------------------------------------------------------------
def _interp_weights(coords: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower grid node index and the weight of the next node, for linear interpolation on a grid of ``cell``."""
    position = coords / cell
    lower = np.floor(position).astype(np.int64)
    return lower, (position - lower).astype(np.float32)


def _texture_bscan(anatomy: _Anatomy, k: int, spec: VolumeSpec) -> np.ndarray:
    """``(H, W)`` float32 smooth zero-mean texture of B-scan ``k``, interpolated from the anatomy's grid."""
    dx, dy, dz = spec.spacing_mm
    cell_x, cell_y, cell_z = _TEXTURE_CELL_MM
    z0, fz = _interp_weights(np.array([k * dz]), cell_z)
    plane = (1 - fz[0]) * anatomy.texture[z0[0]] + fz[0] * anatomy.texture[z0[0] + 1]
    x0, fx = _interp_weights(np.arange(spec.shape[2]) * dx, cell_x)
    plane = plane[:, x0] * (1 - fx) + plane[:, x0 + 1] * fx
    y0, fy = _interp_weights(np.arange(spec.shape[1]) * dy, cell_y)
    return plane[y0] * (1 - fy)[:, None] + plane[y0 + 1] * fy[:, None]


def _render_bscan(anatomy: _Anatomy, k: int, spec: VolumeSpec) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free reflectivity and labels of B-scan ``k``.

    Each A-scan is a stack of layers whose boundaries are depths in mm; a row belongs to the layer its centre lies
    in. Labels use the same rows, so a label covers exactly the voxels drawn as fluid.

    Returns:
        ``(reflectivity, labels)``: ``(H, W)`` float32 >= 0 (RPE about 1), and uint8 in ``{0, IRF, SRF, PED}``.
    """
    height, width = spec.shape[1:]
    dx, dy, _ = spec.spacing_mm
    bruch = anatomy.bruch_mm[k]
    ped_top = bruch - anatomy.ped_height_mm[k]
    rpe_top = ped_top - anatomy.rpe_mm
    srf_top = rpe_top - anatomy.srf_height_mm[k]
    thickness = anatomy.thickness_mm[k]
    ilm = srf_top - thickness
    weight = anatomy.fovea_weight[k]

    shares = np.array([(away, fovea) for away, fovea, _ in _LAYERS])
    tops = np.cumsum(shares, axis=0) - shares  # share of the thickness above each layer
    layer_tops = ilm + thickness * ((1 - weight) * tops[:, :1] + weight * tops[:, 1:])  # (layers, W)
    choroid_top = bruch + _BRUCH_MM
    depths = np.vstack([layer_tops, srf_top, rpe_top, ped_top, bruch, choroid_top])
    choroid = anatomy.choroid_reflectivity * np.exp(-anatomy.ped_height_mm[k] / _PED_SHADE_MM)  # shaded by a PED
    values = np.vstack([np.repeat([[r] for _, _, r in _LAYERS], width, axis=1),
                        np.full((1, width), _FLUID_REFLECTIVITY), np.full((1, width), _RPE_REFLECTIVITY),
                        np.full((1, width), anatomy.ped_reflectivity), np.full((1, width), _BRUCH_REFLECTIVITY),
                        choroid[None, :]])
    n = len(_LAYERS)
    steps = np.zeros((3, len(depths), width))  # per boundary, the change of: reflectivity, SRF/PED code, IRF count
    steps[0] = np.diff(values, axis=0, prepend=0.0)
    steps[1, n], steps[1, n + 1] = config.SRF, -config.SRF  # from srf_top to rpe_top
    steps[1, n + 2], steps[1, n + 3] = config.PED, -config.PED  # from ped_top to Bruch's membrane

    # IRF cysts: per A-scan an interval around the cyst centre, kept inside the neuroretina.
    x = np.arange(width) * dx
    z = k * spec.spacing_mm[2]
    for cyst in anatomy.cysts:
        ax, ay, az = cyst.semi_axes_mm
        r2 = ((x - cyst.x_mm) / ax) ** 2 + ((z - cyst.z_mm) / az) ** 2
        if not (r2 < 1).any():
            continue
        centre = ilm + cyst.depth_share * thickness
        half = ay * np.sqrt(np.clip(1 - r2, 0, None))
        top = np.maximum(centre - half, ilm + _IRF_BAND[0] * thickness)
        bottom = np.minimum(centre + half, srf_top - _IRF_BAND[1] * thickness)
        valid = (r2 < 1) & (bottom > top)
        cyst_steps = np.zeros((3, 2, width))
        cyst_steps[2] = [[1], [-1]]
        depths = np.vstack([depths, np.where(valid, top, np.inf), np.where(valid, bottom, np.inf)])
        steps = np.concatenate([steps, cyst_steps], axis=1)

    # Row where each boundary starts (the first row whose centre lies at or below it; beyond the image: row H),
    # then a running sum down each A-scan of the three channels side by side.
    rows = np.clip(np.ceil(depths / dy), 0, height).astype(np.int64)
    index = rows[None] * 3 * width + np.arange(3)[:, None, None] * width + np.arange(width)
    stack = np.bincount(index.ravel(), steps.ravel(), minlength=(height + 1) * 3 * width)
    stack = stack.reshape(height + 1, 3 * width)
    for row in range(1, height):  # np.cumsum along axis 0 is several times slower on a C-ordered array
        stack[row] += stack[row - 1]
    reflectivity = stack[:height, :width].astype(np.float32)
    labels = np.rint(stack[:height, width:2 * width]).astype(np.uint8)
    irf = stack[:height, 2 * width:] > 0.5

    # Tissue texture (strong in the choroid: vessels), the choroid fading with depth.
    below = np.arange(height, dtype=np.float32)[:, None] * np.float32(dy) - choroid_top[None, :].astype(np.float32)
    in_choroid = below > 0
    texture = _texture_bscan(anatomy, k, spec)
    reflectivity *= np.clip(1 + np.where(in_choroid, 0.7, 0.15) * texture, 0.05, None)
    reflectivity *= np.exp(-np.maximum(below, 0) / np.float32(anatomy.choroid_decay_mm))
    reflectivity *= anatomy.shadow[k].astype(np.float32)[None, :]
    reflectivity[irf] = _FLUID_REFLECTIVITY
    labels[irf] = config.IRF
    return reflectivity, labels


# --------------------------------------------------------------------------------------------------------------
# Vendor appearance: speckle, noise floor, log compression
# --------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Appearance:
    """How a vendor turns reflectivity into voxel values.

    Reflectivity is scaled by the depth roll-off and a per-B-scan gain, the noise floor added, and the sum multiplied
    by speckle (:func:`_speckle`, grain ``looks``); it is then log-compressed, ``db_range`` mapped linearly to
    ``out_range`` (fractions of the dtype's maximum) and clipped to the dtype.
    """

    looks: tuple[int, int]  # pixels averaged (axial, lateral) at full size; more = smoother, lower contrast speckle
    noise_floor_db: float  # relative to the RPE (0 dB)
    db_range: tuple[float, float]
    out_range: tuple[float, float]
    bscan_gain_db: float  # standard deviation of a B-scan's brightness change
    rolloff_mm: float  # depth over which the signal falls to 1/e (spectral-domain sensitivity roll-off)


_APPEARANCE = {
    CIRRUS: _Appearance(looks=(2, 1), noise_floor_db=-27.0, db_range=(-36.0, 3.0), out_range=(0.22, 1.05),
                        bscan_gain_db=0.6, rolloff_mm=4.0),
    SPECTRALIS: _Appearance(looks=(3, 2), noise_floor_db=-36.0, db_range=(-37.0, -3.0), out_range=(0.0, 1.0),
                            bscan_gain_db=0.2, rolloff_mm=8.0),
    TOPCON: _Appearance(looks=(2, 1), noise_floor_db=-30.0, db_range=(-33.0, 10.0), out_range=(0.03, 0.62),
                        bscan_gain_db=0.8, rolloff_mm=3.0),
}


def _speckle(rng: np.random.Generator, shape: tuple[int, int], looks: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float32 speckle of mean 1: the mean of ``looks_y x looks_x`` exponential draws over a block of pixels.

    Each value is Gamma(looks_y * looks_x)-distributed; neighbours share draws, so the grain spans the block.
    """
    ly, lx = looks
    uniform = rng.random((shape[0] + ly - 1, shape[1] + lx - 1), dtype=np.float32)
    draws = -np.log1p(-uniform)  # exponential (intensity speckle of one look)
    speckle = np.zeros(shape, np.float32)
    for i in range(ly):
        for j in range(lx):
            speckle += draws[i:i + shape[0], j:j + shape[1]]
    return speckle / np.float32(ly * lx)


def _to_voxels(reflectivity: np.ndarray, rng: np.random.Generator, appearance: _Appearance, spec: VolumeSpec,
               looks: tuple[int, int]) -> np.ndarray:
    """One B-scan's voxel values in ``spec.dtype``, over the vendor's ``out_range``, from ``(H, W)`` reflectivity."""
    dy = spec.spacing_mm[1]
    gain = np.float32(10 ** (rng.normal(0, appearance.bscan_gain_db) / 10))
    rolloff = np.exp(-np.arange(spec.shape[1]) * dy / appearance.rolloff_mm).astype(np.float32)[:, None]
    intensity = reflectivity * (rolloff * gain)
    intensity += np.float32(10 ** (appearance.noise_floor_db / 10))
    intensity *= _speckle(rng, reflectivity.shape, looks)
    db = 10 * np.log10(np.maximum(intensity, np.float32(1e-12)))
    low, high = appearance.db_range
    out_low, out_high = appearance.out_range
    top = np.iinfo(spec.dtype).max
    scale = np.float32((out_high - out_low) / (high - low) * top)
    values = (db - np.float32(low)) * scale + np.float32(out_low * top + 0.5)
    return np.clip(values, 0, top).astype(spec.dtype)


# --------------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------------
def _check_vendor(vendor: str) -> None:
    if vendor not in VENDOR_SPECS:
        close = difflib.get_close_matches(vendor, list(VENDOR_SPECS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"unknown vendor {vendor!r}: expected one of {list(VENDOR_SPECS)}{hint}")


def generate_volume(vendor: str, rng: np.random.Generator, spec: VolumeSpec | None = None,
                    fluids: Sequence[str] = (_IRF_NAME, _SRF_NAME)
                    ) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """One synthetic OCT volume of ``vendor`` with its fluid labels.

    Args:
        vendor: one of ``config.VENDORS``; sets the intensity distribution (speckle, noise, log compression).
        rng: the only source of randomness: the same generator state gives the same volume.
        spec: size, dtype and spacing; default the vendor's first ``VENDOR_SPECS`` entry. Anatomy is drawn in mm,
            so a ``spec.resized(...)`` volume shows the same anatomy more coarsely. Its dtype should be the
            vendor's (uint8 Cirrus/Topcon, uint16 Spectralis) for the real intensity range.
        fluids: names from ``config.FLUIDS`` to put in the volume (each as one lesion; IRF as 2-6 cysts); empty
            for a volume without fluid.

    Returns:
        ``(oct, reference, geometry)``: ``oct`` ``(z, y, x)`` in ``spec.dtype`` over the vendor's share of its range
        (Spectralis: all of it);
        ``reference`` ``(z, y, x)`` uint8 with ``config.BACKGROUND`` and the codes of ``fluids``; ``geometry``
        with ``spec.spacing_mm`` and zero origin.

    Raises:
        ValueError: unknown vendor or fluid name, or a spec whose dtype is not an unsigned integer type.
    """
    _check_vendor(vendor)
    unknown = [name for name in fluids if name not in config.FLUIDS]
    if unknown:
        raise ValueError(f"unknown fluid(s) {unknown}: expected names from {list(config.FLUIDS)}")
    spec = spec or VENDOR_SPECS[vendor][0]
    if np.dtype(spec.dtype).kind != "u":
        raise ValueError(f"spec.dtype must be an unsigned integer type like the vendor's "
                         f"{VENDOR_SPECS[vendor][0].dtype}, got {spec.dtype}")
    appearance = _APPEARANCE[vendor]
    # speckle grain in pixels: the vendor's grain at full size, shrinking to a pixel on coarser samplings
    full = VENDOR_SPECS[vendor][0].spacing_mm
    looks = tuple(max(1, round(n * f / s)) for n, f, s in zip(appearance.looks, full[1::-1],
                                                              spec.spacing_mm[1::-1]))
    anatomy = _sample_anatomy(spec, rng, fluids)
    volume = np.empty(spec.shape, spec.dtype)
    reference = np.empty(spec.shape, np.uint8)
    for k in range(spec.shape[0]):
        reflectivity, reference[k] = _render_bscan(anatomy, k, spec)
        volume[k] = _to_voxels(reflectivity, rng, appearance, spec, looks)
    return volume, reference, Geometry(spacing_mm=tuple(float(s) for s in spec.spacing_mm))


def fluids_for_case(index: int) -> tuple[str, ...]:
    """The fluid names of a vendor's ``index``-th case (0-based) in a generated data set (``FLUID_PLAN``, cycled)."""
    return FLUID_PLAN[index % len(FLUID_PLAN)]


def case_spec(vendor: str, index: int, small: bool = False, n_bscans: int | None = None) -> VolumeSpec:
    """The spec of a vendor's ``index``-th case: its default size (Topcon alternating), optionally reduced.

    Args:
        small: B-scans of ``SMALL_SCALE`` times the height and width, ``SMALL_N_BSCANS`` of them.
        n_bscans: number of B-scans (overrides ``small``'s); the B-scans still cover the vendor's extent.
    """
    _check_vendor(vendor)
    specs = VENDOR_SPECS[vendor]
    spec = specs[index % len(specs)]
    if small:
        return spec.resized(n_bscans or SMALL_N_BSCANS, SMALL_SCALE)
    return spec.resized(n_bscans) if n_bscans else spec


def _case_is_complete(folder: Path) -> bool:
    return (folder / OCT_FILE).is_file() and (folder / REFERENCE_FILE).is_file()


def _claim_folder(out_root: Path, settings: dict) -> None:
    """Writes the marker of a new tree, or checks that ``out_root`` already holds a tree made with ``settings``.

    Raises:
        FileExistsError: ``out_root`` holds OCT volumes this generator did not write, or a synthetic tree made with
            other settings.
    """
    marker = out_root / MARKER_FILE
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FileExistsError(f"{marker}: unreadable ({error}); delete {out_root} or choose another "
                                  f"--out") from None
        if saved != settings:
            raise FileExistsError(f"{out_root}: holds a synthetic set made with {saved}, not {settings}; delete it "
                                  f"or choose another --out")
        return
    if out_root.is_dir() and next(out_root.rglob(OCT_FILE), None) is not None:
        raise FileExistsError(f"{out_root}: already holds OCT volumes ({next(out_root.rglob(OCT_FILE))}) that this "
                              f"generator did not write; choose an empty or new --out")
    atomic_write_text(marker, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def generate_dataset(out_root: str | Path, cases_per_vendor: int, small: bool = False, n_bscans: int | None = None,
                     seed: int = 0, progress: bool = True) -> list[Path]:
    """Writes a synthetic data set in the RETOUCH training-set layout, skipping cases already written.

    ``out_root/RETOUCH-TrainingSet-<Vendor>/TRAIN<nnn>/{oct,reference}.mhd`` (+ ``.raw``), numbered across vendors
    in ``config.VENDORS`` order like the real set (Cirrus TRAIN001.., then Spectralis, then Topcon). Case ``i`` of a
    vendor holds ``fluids_for_case(i)`` and is drawn from its own generator seeded by ``(seed, vendor, i)``.
    A ``MARKER_FILE`` at the top records the settings; a rerun with the same settings writes only the missing
    cases, and nothing is written into a folder holding other OCT data.

    Args:
        out_root: destination folder (created).
        cases_per_vendor: cases of each vendor (``SYNTHETIC_CASES_PER_VENDOR``), >= 1; with >= 3 each vendor has
            every fluid type and a case without fluid.
        small: tiny volumes for tests (see :func:`case_spec`).
        n_bscans: B-scans per volume (default: the vendor's count, or ``SMALL_N_BSCANS`` when small).
        seed: the whole data set is a function of the settings.
        progress: show a progress bar.

    Returns:
        The ``oct.mhd`` of every case, in case-number order.

    Raises:
        ValueError: ``cases_per_vendor`` < 1, or ``n_bscans`` outside 1..``MAX_BSCANS``.
        FileExistsError: see the folder rules above.
    """
    if cases_per_vendor < 1:
        raise ValueError(f"cases_per_vendor must be >= 1, got {cases_per_vendor}")
    if n_bscans is not None and not 1 <= n_bscans <= MAX_BSCANS:
        raise ValueError(f"--bscans {n_bscans}: expected 1 to {MAX_BSCANS} B-scans per volume (devices scan up to a "
                         f"few hundred)")
    out_root = Path(out_root)
    # the generator is named by its module, not __name__: started with `python -m` that would be __main__
    settings = {"generator": "utils.synthetic", "format_version": FORMAT_VERSION, "cases_per_vendor": cases_per_vendor,
                "small": small, "n_bscans": n_bscans, "seed": seed}
    _claim_folder(out_root, settings)
    jobs = []
    for vendor_index, vendor in enumerate(config.VENDORS):
        for index in range(cases_per_vendor):
            number = vendor_index * cases_per_vendor + index + 1
            folder = out_root / f"RETOUCH-TrainingSet-{vendor}" / f"TRAIN{number:03d}"
            jobs.append((vendor_index, vendor, index, folder))
    for vendor_index, vendor, index, folder in tqdm(jobs, desc="synthetic cases", unit="case", disable=not progress):
        if _case_is_complete(folder):
            continue
        rng = np.random.default_rng([seed, vendor_index, index])
        volume, reference, geometry = generate_volume(vendor, rng, case_spec(vendor, index, small, n_bscans),
                                                      fluids_for_case(index))
        write_volume(folder / OCT_FILE, volume, geometry)
        write_volume(folder / REFERENCE_FILE, reference, geometry)  # last: a complete case has both files
    return [folder / OCT_FILE for *_, folder in jobs]


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m utils.synthetic --out DIR [--small] [--cases-per-vendor N] [--bscans N]
    [--seed S]``."""
    parser = argparse.ArgumentParser(prog="python -m utils.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=config.SYNTHETIC_ROOT, help="destination folder (default: %(default)s)")
    parser.add_argument("--small", action="store_true",
                        help=f"tiny volumes for tests: {SMALL_N_BSCANS} B-scans of {SMALL_SCALE:g}x height/width")
    parser.add_argument("--cases-per-vendor", type=int, default=config.SYNTHETIC_CASES_PER_VENDOR,
                        help="default: %(default)s")
    parser.add_argument("--bscans", type=int, default=None,
                        help="B-scans per volume, covering the vendor's usual 6 mm (default: the vendor's count)")
    parser.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out_root = Path(args.out)
    before = sum(_case_is_complete(path.parent) for path in out_root.rglob(OCT_FILE)) if out_root.is_dir() else 0
    try:
        paths = generate_dataset(out_root, args.cases_per_vendor, args.small, args.bscans, args.seed)
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    written = len(paths) - min(before, len(paths))
    print(f"synthetic RETOUCH set in {out_root}: {len(paths)} cases ({args.cases_per_vendor} per vendor, "
          f"{written} written, {len(paths) - written} already there) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
