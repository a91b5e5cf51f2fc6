"""ETDRS subfields and the fovea on synthetic volumes with fluid placed in known subfields."""


import numpy as np
import pytest

from utils.io.mhd_io import Geometry
from utils.predict import etdrs

FLUIDS = {"IRF": 1, "SRF": 2, "PED": 3}
# (x, y, z) mm: 0.05 mm between A-scans, 0.01 mm rows, 0.1 mm between B-scans
GEOMETRY = Geometry(spacing_mm=(0.05, 0.01, 0.1))
SHAPE = (61, 120, 161)  # (z, y, x): 6 mm of B-scans by 8 mm wide; scan centre (30, 80)
VOXEL_MM3 = 0.05 * 0.01 * 0.1
GRID = {"diameters_mm": (1.0, 3.0, 6.0), "fovea_search_radius_mm": 1.0, "fovea_min_depth_mm": 0.03}


def retina(pit_at=None, pit_depth_rows=12, seed=0):
    """A bright band (rows 30..70) on a dark noisy background; with a Gaussian pit (sigma 0.3 mm) of its top at
    ``pit_at`` = (z, x)."""
    rng = np.random.default_rng(seed)
    volume = rng.integers(0, 40, SHAPE).astype(np.uint8)
    top = np.full(SHAPE[::2], 30.0)
    if pit_at is not None:
        dz, dx = etdrs._en_face_offsets_mm(SHAPE[0], SHAPE[2], GEOMETRY, *pit_at)
        top += pit_depth_rows * np.exp(-(dz ** 2 + dx ** 2) / (2 * 0.3 ** 2))
    rows = np.arange(SHAPE[1])[None, :, None]
    band = (rows >= np.rint(top)[:, None, :]) & (rows < 70)
    volume[band] = rng.integers(180, 230, np.count_nonzero(band))
    return volume


def test_the_fovea_is_the_lowest_point_of_the_inner_surface_near_the_centre():
    fovea = etdrs.find_fovea(retina(pit_at=(25, 90)), GEOMETRY, 1.0, 0.03)  # 0.5 mm up and 0.5 mm right
    assert fovea.found_by == etdrs.FOUND_BY_SURFACE
    assert abs(fovea.bscan - 25) <= 1 and abs(fovea.column - 90) <= 2


@pytest.mark.parametrize("volume", [
    retina(),  # flat surface: no pit
    retina(pit_at=(30, 80), pit_depth_rows=2),  # a pit of 0.02 mm, shallower than FOVEA_MIN_DEPTH_MM
    retina(pit_at=(30, 130)),  # the pit 2.5 mm away: the surface near the centre descends towards the edge
    np.zeros(SHAPE, np.uint8),  # nothing to see
], ids=["flat", "shallow", "far", "blank"])
def test_without_a_pit_near_the_centre_the_scan_centre_is_used(volume):
    assert etdrs.find_fovea(volume, GEOMETRY, 1.0, 0.03) == etdrs.Fovea(30.0, 80.0, etdrs.FOUND_BY_CENTRE)


def test_inner_surface_rows_find_the_top_of_the_band():
    rows = etdrs.inner_surface_rows(retina(pit_at=(30, 80))[30])
    assert rows.shape == (SHAPE[2],)
    assert abs(rows[0] - 30) <= 2 and abs(rows[80] - 42) <= 2
    assert np.isnan(etdrs.inner_surface_rows(np.zeros((20, 10), np.uint8))).all()


def test_fluid_volumes_land_in_their_subfields():
    fovea = etdrs.Fovea(30.0, 80.0, etdrs.FOUND_BY_CENTRE)
    labels = np.zeros(SHAPE, np.uint8)
    labels[30, 50:52, 80] = 1   # at the fovea: central, 2 voxels
    labels[30, 60:63, 100] = 2  # 1.0 mm to the right (larger x): inner right, 3 voxels
    labels[20, 60, 80] = 3      # 1.0 mm towards B-scan 0: inner top
    labels[30, 60:64, 40] = 1   # 2.0 mm to the left: outer left, 4 voxels
    labels[50, 60, 80] = 1      # 2.0 mm towards the last B-scan: outer bottom
    labels[30, 60:65, 150] = 1  # 3.5 mm to the right: beyond the grid, not counted
    labels[33, 60, 84] = 2      # 0.3 mm down, 0.2 mm right: r = 0.36 mm, central
    volumes = etdrs.subfield_volumes_mm3(labels, GEOMETRY, fovea, FLUIDS)
    expected = {fluid: dict.fromkeys(etdrs.SUBFIELDS, 0.0) for fluid in FLUIDS}
    expected["IRF"].update(central=2, outer_left=4, outer_bottom=1)
    expected["SRF"].update(central=1, inner_right=3)
    expected["PED"].update(inner_top=1)
    for fluid in FLUIDS:
        assert volumes[fluid] == pytest.approx({k: v * VOXEL_MM3 for k, v in expected[fluid].items()})


def test_subfield_boundaries_and_diagonals():
    geometry = Geometry(spacing_mm=(1.0, 1.0, 1.0))
    fovea = etdrs.Fovea(10.0, 10.0, etdrs.FOUND_BY_SURFACE)
    fields = etdrs.subfield_map(21, 21, geometry, fovea, (2.0, 6.0, 12.0))  # radii 1, 3, 6 mm
    name = {(dz, dx): etdrs.SUBFIELDS[fields[10 + dz, 10 + dx]] if fields[10 + dz, 10 + dx] >= 0 else None
            for dz in range(-10, 11) for dx in range(-10, 11)}
    assert name[0, 0] == "central" and name[0, 1] == "inner_right"  # r = 1.0: the inner ring begins
    assert name[-2, 0] == "inner_top" and name[0, -2] == "inner_left" and name[2, 0] == "inner_bottom"
    assert name[2, 2] == "inner_bottom" and name[-2, -2] == "inner_top"  # diagonals go to top / bottom
    assert name[0, 3] == "outer_right" and name[-5, 2] == "outer_top"
    assert name[0, 6] is None and name[4, 5] is None  # r = 6 and 6.4 mm: outside
    with pytest.raises(ValueError, match="three increasing positive diameters"):
        etdrs.subfield_map(3, 3, geometry, fovea, (3.0, 1.0, 6.0))


def test_etdrs_row_gives_every_column():
    volume = retina(pit_at=(25, 90))
    labels = np.zeros(SHAPE, np.uint8)
    labels[25, 50:55, 90] = 1  # 5 voxels under the pit: central once the fovea is found there
    row = etdrs.etdrs_row(volume, labels, GEOMETRY, FLUIDS, **GRID)
    assert list(row) == etdrs.etdrs_columns(list(FLUIDS))
    assert row["fovea_found_by"] == etdrs.FOUND_BY_SURFACE
    assert row["IRF_central_mm3"] == pytest.approx(5 * VOXEL_MM3)
    assert 0.9 < row["etdrs_scanned_fraction"] < 0.97  # the disc reaches 0.5 mm beyond B-scan 0
    centred = etdrs.grid_scanned_fraction(*SHAPE[::2], GEOMETRY, etdrs.scan_centre(SHAPE))
    assert centred == pytest.approx(1.0, abs=0.01)  # 6 x 8 mm covers the 6 mm disc (A-scans as whole cells)
    narrow = etdrs.grid_scanned_fraction(11, 161, GEOMETRY, etdrs.scan_centre((11, 1, 161)))  # 1.1 mm of B-scans
    assert 0.1 < narrow < 0.3


@pytest.mark.parametrize("laterality, nasal, temporal", [("R", 3, 4), ("L", 4, 3), ("", "", "")])
def test_horizontal_quadrants_named_nasal_temporal_by_laterality(laterality, nasal, temporal):
    # 3 voxels 1 mm to the right of the scan centre (inner right), 4 voxels 1 mm to its left (inner left): the
    # right of a right eye's fundus view is nasal, the left of a left eye's.
    volume = retina()  # no pit: the grid sits at the scan centre (30, 80)
    labels = np.zeros(SHAPE, np.uint8)
    labels[30, 60:63, 100] = 1
    labels[30, 60:64, 60] = 1
    row = etdrs.etdrs_row(volume, labels, GEOMETRY, FLUIDS, **GRID, laterality=laterality)
    assert list(row) == etdrs.etdrs_columns(list(FLUIDS))
    assert row["laterality"] == laterality
    assert row["IRF_inner_right_mm3"] == pytest.approx(3 * VOXEL_MM3)  # image names are always given
    assert row["IRF_inner_left_mm3"] == pytest.approx(4 * VOXEL_MM3)
    for side, voxels in (("nasal", nasal), ("temporal", temporal)):
        expected = "" if voxels == "" else pytest.approx(voxels * VOXEL_MM3)
        assert row[f"IRF_inner_{side}_mm3"] == expected
        assert row[f"IRF_outer_{side}_mm3"] == ("" if voxels == "" else 0.0)
