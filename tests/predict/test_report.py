"""The per-case report and its HTML index, on hand-made label volumes."""

from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from utils.io.mhd_io import Geometry
from html_check import check_html
from utils.predict import etdrs, report

FLUIDS = {"IRF": 1, "SRF": 2, "PED": 3}
GEOMETRY = Geometry(spacing_mm=(0.05, 0.004, 0.1))  # (x, y, z) mm
DIAMETERS_MM = (1.0, 3.0, 6.0)
INDEX_FILES = ("report.png", "report.html")  # REPORT_PNG, REPORT_HTML
def labels_with_fluid():
    labels = np.zeros((6, 20, 30), np.uint8)
    labels[2, 5:9, 10] = 1    # IRF: 4 voxels in one A-scan
    labels[2, 5:7, 11] = 1    # and 2 in the next
    labels[4, 10:13, 3:5] = 2  # SRF: 3 deep in two A-scans of B-scan 4
    return labels


def test_thickness_maps_are_fluid_height_per_ascan_in_um():
    maps = report.thickness_maps_um(labels_with_fluid(), GEOMETRY, FLUIDS)
    assert maps["IRF"].shape == (6, 30)
    assert maps["IRF"][2, 10] == pytest.approx(16.0) and maps["IRF"][2, 11] == pytest.approx(8.0)  # 4 x 4 µm
    assert maps["SRF"][4, 3] == pytest.approx(12.0) and maps["SRF"].sum() == pytest.approx(24.0)
    assert not maps["PED"].any()


def test_volume_per_bscan_and_the_bscans_with_most_fluid():
    labels = labels_with_fluid()
    per_bscan = report.volume_per_bscan_mm3(labels, GEOMETRY, FLUIDS)
    voxel = GEOMETRY.voxel_volume_mm3
    np.testing.assert_allclose(per_bscan["IRF"], [0, 0, 6 * voxel, 0, 0, 0])
    np.testing.assert_allclose(per_bscan["SRF"], [0, 0, 0, 0, 6 * voxel, 0])
    assert report.bscans_with_most_fluid(labels, FLUIDS, 3) == [2, 4]  # equal totals: by index; empty ones left out
    labels[4, 0, 0] = 3
    assert report.bscans_with_most_fluid(labels, FLUIDS, 1) == [4]
    assert report.bscans_with_most_fluid(np.zeros((5, 2, 2), np.uint8), FLUIDS, 3) == [2]  # no fluid: the middle


def row_for(case, labels):
    volumes = {f"{f}_volume_mm3": float(np.count_nonzero(labels == c)) * GEOMETRY.voxel_volume_mm3
               for f, c in FLUIDS.items()}
    return {"case": case, "vendor": "Cirrus", **volumes, **{f"{f}_presence": 0.5 for f in FLUIDS},
            "fovea_bscan": 2.5, "fovea_column": 14.5, "fovea_found_by": etdrs.FOUND_BY_CENTRE,
            "etdrs_scanned_fraction": 0.1}


def test_draw_report_writes_a_png(tmp_path):
    labels = labels_with_fluid()
    volume = np.random.default_rng(0).integers(0, 256, labels.shape, dtype=np.uint8)
    path = tmp_path / "TRAIN001" / "report.png"
    report.draw_report(path, "TRAIN001", volume, labels, GEOMETRY, row_for("TRAIN001", labels), FLUIDS, DIAMETERS_MM)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= 1000 and image.height >= 1000
    assert [p.name for p in path.parent.iterdir()] == ["report.png"]  # no temporary file left
    with pytest.raises(ValueError, match="must be the same"):
        report.draw_report(path, "TRAIN001", volume[:2], labels, GEOMETRY, row_for("TRAIN001", labels), FLUIDS, DIAMETERS_MM)


def test_index_is_valid_html_linking_each_report_and_escaping_names(tmp_path):
    names = ["TRAIN001", "odd <name> & #1"]
    for name in names:
        (tmp_path / name).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / name / "report.png")
    (tmp_path / "TRAIN009").mkdir()  # no report: not in the index
    table = pd.DataFrame([row_for(name, labels_with_fluid()) for name in names + ["TRAIN009"]])
    path = report.write_report_index(tmp_path, table, list(FLUIDS), *INDEX_FILES)
    assert path == tmp_path / "report.html"
    links = check_html(path)
    images = [link for link in links if not link.startswith("#")]
    assert sorted(unquote(link) for link in set(images)) == sorted(f"{name}/report.png" for name in names)
    text = path.read_text()
    assert "odd &lt;name&gt; &amp; #1" in text and "TRAIN009" not in text
    assert report.write_report_index(tmp_path, table.iloc[2:], list(FLUIDS), *INDEX_FILES) is None


def test_the_strict_parser_catches_broken_markup(tmp_path):
    (tmp_path / "bad.html").write_text("<!DOCTYPE html><html><body><table><tr><td>x</tr></table></body></html>")
    with pytest.raises(AssertionError):
        check_html(tmp_path / "bad.html")
