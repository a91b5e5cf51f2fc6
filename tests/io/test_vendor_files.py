"""Vendor files in: small valid files of each format built with the readers' own layouts, read back through
utils/io/vendor_files.py, and truncated or corrupt ones failing in one line that names the file.

Built here: Cirrus .img (raw bytes), Heidelberg .vol (eyepy's ``vol_format``), the Heyex XML export (eyepy's
``xml_format`` element paths, PNG B-scans), Topcon .fds/.fda (oct-converter's chunk structs), OCT DICOM
(oct-converter's ``write_opt_dicom``). Heidelberg .e2e is not: its layout is not
documented well enough in either library to write one, so only its error paths are tested.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from utils.configuration import load_config
from utils.io.mhd_io import VolumeError
from utils.io.vendor_files import (VendorFileError, VendorFileSettings, is_vendor_file, read_oct_volume,
                                   read_vendor_volume, vendor_file_vendor)
from vendor_factory import write_dicom, write_heyex_xml, write_img, write_topcon, write_vol

SHAPE = (5, 24, 16)  # (z, y, x): 5 B-scans, 24 deep, 16 wide; all axes distinct so a transposition shows


@pytest.fixture
def volume() -> np.ndarray:
    """A uint8 volume whose every voxel tells its (z, y, x): a swap or flip of any axis changes it."""
    z, y, x = np.indices(SHAPE)
    return (z * 50 + y * 2 + x % 2).astype(np.uint8)


def settings(*overrides: str) -> VendorFileSettings:
    return VendorFileSettings.from_config(load_config(["CIRRUS_IMG_SHAPE=(24,16)", *overrides]))


# --------------------------------------------------------------------------------------------------------------
# Valid files: volume, orientation, spacing and vendor arrive as they went in
# --------------------------------------------------------------------------------------------------------------
def test_cirrus_img_volume_and_spacing_setting(tmp_path, volume):
    path = write_img(tmp_path / "P1_Macular Cube 512x128_1-2-2020_10-0-0_OS_sn1_cube_raw.img", volume)
    result = read_vendor_volume(path, settings("CIRRUS_IMG_SPACING_MM=(0.012,0.002,0.047)"))
    assert result.vendor == "Cirrus" and result.laterality == "L"
    assert result.array.dtype == np.uint8
    np.testing.assert_array_equal(result.array, volume)
    assert result.geometry.spacing_mm == (0.012, 0.002, 0.047)
    assert vendor_file_vendor(path, ("Cirrus", "Spectralis", "Topcon")) == "Cirrus"


def test_cirrus_img_without_spacing_names_the_setting(tmp_path, volume):
    path = write_img(tmp_path / "scan.img", volume)
    with pytest.raises(VendorFileError) as error:
        read_vendor_volume(path, settings())
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "--set CIRRUS_IMG_SPACING_MM=" in message


@pytest.mark.parametrize("eye, vertical, laterality", [("R", False, "R"), ("L", False, "L"), ("OD", False, "R"),
                                                       ("U", False, ""), ("R", True, "")])
def test_heyex_xml_export_volume_orientation_spacing_laterality(tmp_path, volume, eye, vertical, laterality):
    # laterality only for horizontal left-to-right B-scans (ETDRS nasal/temporal relies on it); eyepy would map
    # every value but "R" to a left eye
    path = write_heyex_xml(tmp_path / "export", volume, (0.0114, 0.0039, 0.12), eye=eye, vertical=vertical)
    result = read_vendor_volume(path, settings())
    assert result.vendor == "Spectralis" and result.laterality == laterality
    assert result.array.dtype == np.uint8
    np.testing.assert_array_equal(result.array, volume)
    np.testing.assert_allclose(result.geometry.spacing_mm, (0.0114, 0.0039, 0.12))
    assert vendor_file_vendor(path, ("Cirrus", "Spectralis", "Topcon")) == "Spectralis"


def test_heyex_xml_with_a_missing_bscan_image_or_not_heyex_is_one_line(tmp_path, volume):
    path = write_heyex_xml(tmp_path / "export", volume, (0.0114, 0.0039, 0.12))
    (tmp_path / "export" / "export_002.png").unlink()
    notes = tmp_path / "notes.xml"
    notes.write_text('<?xml version="1.0"?><settings><a>1</a></settings>\n')
    single = write_heyex_xml(tmp_path / "single", volume[:1], (0.0114, 0.0039, 0.12))
    for broken, expected in ((path, "not a readable .xml file"), (notes, "not a Heidelberg Heyex XML export"),
                             (single, "holds 1 OCT B-scan(s)")):
        with pytest.raises(VendorFileError) as error:
            read_vendor_volume(broken, settings())
        message = str(error.value)
        assert "\n" not in message and message.startswith(str(broken)) and expected in message
    with pytest.raises(VendorFileError, match="not a Heidelberg Heyex XML export"):
        vendor_file_vendor(notes, ("Cirrus", "Spectralis", "Topcon"))


def test_heidelberg_vol_volume_orientation_spacing(tmp_path, volume):
    path = write_vol(tmp_path / "case.vol", volume, (0.0114, 0.0039, 0.12))
    result = read_vendor_volume(path, settings())
    assert result.vendor == "Spectralis" and result.laterality == "R"
    assert result.array.shape == SHAPE and result.array.dtype == np.uint8
    # the float reflectivities round-trip through Heyex's log display scale to within one grey level
    assert np.abs(result.array.astype(int) - volume).max() <= 1
    np.testing.assert_allclose(result.geometry.spacing_mm, (0.0114, 0.0039, 0.12))


@pytest.mark.parametrize("suffix", [".fds", ".fda"])
def test_topcon_volume_orientation_spacing(tmp_path, volume, suffix):
    wide = volume.astype(np.uint16) * 16  # beyond 0..255: stays uint16
    path = write_topcon(tmp_path / f"case{suffix}", wide, x_mm=6.0 * 16 / 512, y_mm=0.5, z_um=2.6)
    result = read_vendor_volume(path, settings())
    assert result.vendor == "Topcon" and result.laterality == "L"
    assert result.array.dtype == np.uint16
    np.testing.assert_array_equal(result.array, wide)
    # x: scan width / A-scans, y: depth resolution, z: scan height / B-scans
    np.testing.assert_allclose(result.geometry.spacing_mm, (6.0 / 512, 0.0026, 0.5 / SHAPE[0]))


def test_topcon_uint16_within_uint8_range_becomes_uint8(tmp_path, volume):
    path = write_topcon(tmp_path / "case.fds", volume, x_mm=6.0, y_mm=6.0, z_um=2.6)
    array, geometry, _ = read_oct_volume(path, settings())
    assert array.dtype == np.uint8
    np.testing.assert_array_equal(array, volume)


def test_dicom_volume_orientation_spacing_vendor(tmp_path, volume):
    path = write_dicom(tmp_path / "case.dcm", volume, (0.0117, 0.0026, 0.047), manufacturer="Topcon")
    result = read_vendor_volume(path, settings())
    assert result.vendor == "Topcon" and result.laterality == "L"
    # oct-converter's writer rescales to 0..100 (uint16), which arrives as uint8 0..100
    expected = ((volume - volume.min()) / (volume.max() - volume.min()) * 100).astype(np.uint16).astype(np.uint8)
    np.testing.assert_array_equal(result.array, expected)
    np.testing.assert_allclose(result.geometry.spacing_mm, (0.0117, 0.0026, 0.047))
    assert vendor_file_vendor(path, ("Cirrus", "Spectralis", "Topcon")) == "Topcon"


def test_dicom_of_unknown_manufacturer_takes_the_vendor_from_its_folder(tmp_path, volume):
    folder = tmp_path / "Spectralis"
    folder.mkdir()
    path = write_dicom(folder / "case.dcm", volume, (0.0117, 0.0039, 0.12), manufacturer="Acme")
    assert read_vendor_volume(path, settings()).vendor == "Spectralis"
    other = write_dicom(tmp_path / "other.dcm", volume, (0.0117, 0.0039, 0.12), manufacturer="Acme")
    with pytest.raises(VendorFileError, match="unknown vendor"):
        vendor_file_vendor(other, ("Cirrus", "Spectralis", "Topcon"))


# --------------------------------------------------------------------------------------------------------------
# Truncated and corrupt files: one line naming the file
# --------------------------------------------------------------------------------------------------------------
def _one_line_naming(error: pytest.ExceptionInfo, path: Path) -> None:
    message = str(error.value)
    assert isinstance(error.value, VolumeError)
    assert "\n" not in message and message.startswith(str(path))


@pytest.mark.parametrize("suffix", [".img", ".vol", ".fds", ".fda", ".dcm", ".e2e"])
def test_truncated_file_is_one_line(tmp_path, volume, suffix):
    build = {".img": lambda p: write_img(p, volume), ".vol": lambda p: write_vol(p, volume, (0.01, 0.004, 0.1)),
             ".fds": lambda p: write_topcon(p, volume, 6.0, 6.0, 2.6),
             ".fda": lambda p: write_topcon(p, volume, 6.0, 6.0, 2.6),
             ".dcm": lambda p: write_dicom(p, volume, (0.01, 0.004, 0.1)),
             ".e2e": lambda p: p.write_bytes(b"CMDb" + bytes(200))}
    path = tmp_path / f"case{suffix}"
    build[suffix](path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) * 2 // 3 + 1])
    vendor_files = settings("CIRRUS_IMG_SPACING_MM=(0.01,0.002,0.05)", "E2E_SPACING_XZ_MM=(0.011,0.12)")
    with pytest.raises(VendorFileError) as error:
        read_vendor_volume(path, vendor_files)
    _one_line_naming(error, path)


@pytest.mark.parametrize("suffix", [".vol", ".fds", ".fda", ".dcm", ".e2e", ".img"])
def test_foreign_bytes_are_one_line(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(b"this is not an OCT volume\n" * 3)
    vendor_files = settings("CIRRUS_IMG_SPACING_MM=(0.01,0.002,0.05)", "E2E_SPACING_XZ_MM=(0.011,0.12)")
    with pytest.raises(VendorFileError) as error:
        read_vendor_volume(path, vendor_files)
    _one_line_naming(error, path)


def test_e2e_without_spacing_names_the_setting(tmp_path):
    path = tmp_path / "case.e2e"
    path.write_bytes(bytes(100))
    with pytest.raises(VendorFileError, match=r"--set E2E_SPACING_XZ_MM="):
        read_vendor_volume(path, settings())


def test_suffixes_and_settings(tmp_path):
    assert is_vendor_file("a/B.VOL") and is_vendor_file("x.dcm") and not is_vendor_file("oct.mhd")
    with pytest.raises(Exception, match="CIRRUS_IMG_SHAPE"):
        load_config(["CIRRUS_IMG_SHAPE=(0,512)"])
    with pytest.raises(Exception, match="E2E_SPACING_XZ_MM"):
        load_config(["E2E_SPACING_XZ_MM=(0.01,0.02,0.03)"])
