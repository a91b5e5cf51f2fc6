"""Vendor files in: small valid files of each format built with the readers' own layouts, read back through
utils/io/vendor_files.py, and truncated or corrupt ones failing in one line that names the file.

Built here: Cirrus .img (raw bytes), Heidelberg .vol (eyepy's ``vol_format``), Topcon .fds/.fda (oct-converter's
chunk structs), OCT DICOM (oct-converter's ``write_opt_dicom``). Heidelberg .e2e is not: its layout is not
documented well enough in either library to write one, so only its error paths are tested.
"""

from __future__ import annotations

import datetime
import struct
from pathlib import Path

import numpy as np
import pytest

from utils.configuration import load_config
from utils.io.mhd_io import VolumeError
from utils.io.vendor_files import (VendorFileError, is_vendor_file, read_oct_volume, read_vendor_volume,
                                   vendor_file_vendor)

SHAPE = (5, 24, 16)  # (z, y, x): 5 B-scans, 24 deep, 16 wide; all axes distinct so a transposition shows


@pytest.fixture
def volume() -> np.ndarray:
    """A uint8 volume whose every voxel tells its (z, y, x): a swap or flip of any axis changes it."""
    z, y, x = np.indices(SHAPE)
    return (z * 50 + y * 2 + x % 2).astype(np.uint8)


def write_img(path: Path, volume: np.ndarray) -> Path:
    """Cirrus .img: uint8, each B-scan A-scan after A-scan (depth fastest), as oct-converter's IMG reads it."""
    path.write_bytes(np.ascontiguousarray(volume.transpose(0, 2, 1)).tobytes())
    return path


def write_vol(path: Path, volume: np.ndarray, spacing_mm: tuple[float, float, float], eye: str = "OD") -> Path:
    """Heidelberg .vol through eyepy's own ``vol_format`` (the published header layout, documented in its code)."""
    import construct as cs
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io.he.vol_reader import vol_format

    n_bscans, size_y, size_x = volume.shape
    when = datetime.datetime(2020, 1, 2).isoformat()  # eyepy encodes its dates from ISO text
    bscans = [dict(bscan_hdr_size=256 + 17 * 4 * size_x, start_x=0.0, start_y=z * spacing_mm[2], end_x=1.0,
                   end_y=z * spacing_mm[2], num_seg=17, quality=30.0, shift=0, iv_transformation=[0.0] * 6,
                   layer_segmentations=np.zeros((17, size_x), np.float32),
                   data=to_vol_intensity(volume[z]).astype(np.float32))
              for z in range(n_bscans)]
    # eyepy 0.21.0's IntDate encodes a float into the 64-bit integer exam_time field (its writer fails on it), so
    # this field is built as the plain integer the format holds: 100 ns units since 1601-01-01
    layout = cs.Struct(*[cs.Renamed(cs.Int64ul, newname="exam_time") if field.name == "exam_time" else field
                         for field in vol_format.subcons])
    exam_time = int((datetime.datetime(2020, 1, 2) - datetime.datetime(1601, 1, 1)).total_seconds()) * 10**7
    data = layout.build(dict(
        size_x=size_x, n_bscans=n_bscans, size_y=size_y, scale_x=spacing_mm[0], distance=spacing_mm[2],
        scale_y=spacing_mm[1], size_x_slo=8, size_y_slo=8, scale_x_slo=0.01, scale_y_slo=0.01,
        scan_position=eye, exam_time=exam_time, scan_pattern=3, id="1", reference_id="", dob=when, visit_date=when,
        grid_type=0, grid_offset=0, grid_type1=0, grid_offset1=0, prog_id="", localizer=np.zeros((8, 8), np.uint8),
        bscans=bscans))
    path.write_bytes(data)
    return path


def write_topcon(path: Path, volume: np.ndarray, x_mm: float, y_mm: float, z_um: float, eye: int = 1) -> Path:
    """Topcon .fds (@IMG_SCAN_03) or .fda (@IMG_MOT_COMP_03) with the chunk structs oct-converter parses:
    uint16 B-scans, @PARAM_SCAN_04 (scan width and height in mm, depth resolution in um), @CAPTURE_INFO_02."""
    fda = path.suffix == ".fda"
    if fda:
        from oct_converter.readers.binary_structs import fda_binary as binary
    else:
        from oct_converter.readers.binary_structs import fds_binary as binary
    n, height, width = volume.shape
    scan = dict(scan_mode=2, width=width, height=height, bits_per_pixel=16, number_slices=n, format=0, size=0)
    header = (binary.oct_header_2.build({**scan, "fast_q": 0.0}) if fda else binary.oct_header.build(scan))
    chunks = {
        b"@IMG_MOT_COMP_03" if fda else b"@IMG_SCAN_03": header + volume.astype("<u2").tobytes(),
        b"@PARAM_SCAN_04": binary.param_scan_04_header.build(dict(
            fixation=0, mirror_pos=0, polar=0, x_dimension_mm=x_mm, y_dimension_mm=y_mm, z_resolution_um=z_um,
            comp_eff_2=0.0, comp_eff_3=0.0, base_pos=0, used_calib_data=0)),
        b"@CAPTURE_INFO_02": binary.capture_info_02_header.build(dict(
            eye=eye, scan_mode=2, session_id=1, label="", cap_date=[2020, 1, 2, 10, 0, 0])),
    }
    data = binary.header.build(dict(file_code="FOCT", file_type="FDA", major_ver=1, minor_ver=0))
    for name, body in chunks.items():
        data += struct.pack("<B", len(name)) + name + struct.pack("<I", len(body)) + body
    path.write_bytes(data + b"\x00")
    return path


def write_dicom(path: Path, volume: np.ndarray, spacing_mm: tuple[float, float, float],
                manufacturer: str = "Topcon") -> Path:
    """OCT DICOM through oct-converter's writer (which rescales intensities to 0..100 and writes uint16)."""
    from oct_converter.dicom.dicom import write_opt_dicom
    from oct_converter.dicom.metadata import (DicomMetadata, ImageGeometry, ManufacturerMeta, OCTImageParams,
                                              PatientMeta, SeriesMeta)

    meta = DicomMetadata(
        PatientMeta(), SeriesMeta(series_id="1", laterality="L"), ManufacturerMeta(manufacturer=manufacturer),
        ImageGeometry(pixel_spacing=[spacing_mm[1], spacing_mm[0]], slice_thickness=spacing_mm[2],
                      image_orientation=[1, 0, 0, 0, 1, 0]),
        OCTImageParams())
    write_opt_dicom(meta, list(volume), path)
    return path


def settings(*overrides: str):
    return load_config(["CIRRUS_IMG_SHAPE=(24,16)", *overrides])


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
    array, geometry = read_oct_volume(path, settings())
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
    cfg = settings("CIRRUS_IMG_SPACING_MM=(0.01,0.002,0.05)", "E2E_SPACING_XZ_MM=(0.011,0.12)")
    with pytest.raises(VendorFileError) as error:
        read_vendor_volume(path, cfg)
    _one_line_naming(error, path)


@pytest.mark.parametrize("suffix", [".vol", ".fds", ".fda", ".dcm", ".e2e", ".img"])
def test_foreign_bytes_are_one_line(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(b"this is not an OCT volume\n" * 3)
    cfg = settings("CIRRUS_IMG_SPACING_MM=(0.01,0.002,0.05)", "E2E_SPACING_XZ_MM=(0.011,0.12)")
    with pytest.raises(VendorFileError) as error:
        read_vendor_volume(path, cfg)
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
