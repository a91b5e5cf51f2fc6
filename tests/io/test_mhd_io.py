import zlib
from pathlib import Path

import numpy as np
import pytest

from utils.io.mhd_io import (Geometry, VolumeError, find_volume, read_volume, remove_volume, with_format,
                            write_volume)


def test_round_trip_keeps_array_and_geometry(tmp_path, rng):
    geometry = Geometry(spacing_mm=(0.0117, 0.00195, 0.047), origin_mm=(-3.0, 1.5, 2.25),
                        direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    array = rng.integers(0, 65535, (3, 7, 5)).astype(np.uint16)
    write_volume(tmp_path / "case" / "oct.mhd", array, geometry)
    read, read_geometry = read_volume(tmp_path / "case" / "oct.mhd")
    assert read.dtype == np.uint16 and read.shape == (3, 7, 5)
    np.testing.assert_array_equal(read, array)
    np.testing.assert_allclose(read_geometry.spacing_mm, geometry.spacing_mm)
    np.testing.assert_allclose(read_geometry.origin_mm, geometry.origin_mm)
    np.testing.assert_allclose(read_geometry.direction, geometry.direction)
    assert read_geometry.voxel_volume_mm3 == pytest.approx(0.0117 * 0.00195 * 0.047)
    assert sorted(p.name for p in (tmp_path / "case").iterdir()) == ["oct.mhd", "oct.raw"]
    assert "ElementDataFile = oct.raw" in (tmp_path / "case" / "oct.mhd").read_text()


def test_missing_raw_names_the_file(tmp_path):
    write_volume(tmp_path / "oct.mhd", np.zeros((2, 3, 4), np.uint8), Geometry((1.0, 1.0, 1.0)))
    (tmp_path / "oct.raw").unlink()
    with pytest.raises(VolumeError, match=r"oct\.mhd: its data file oct\.raw is missing"):
        read_volume(tmp_path / "oct.mhd")


def test_unreadable_header(tmp_path):
    (tmp_path / "oct.mhd").write_text("this is not a header\n")
    with pytest.raises(VolumeError, match=r"oct\.mhd: not a MetaImage header"):
        read_volume(tmp_path / "oct.mhd")
    with pytest.raises(VolumeError, match=r"missing\.mhd: no such header file"):
        read_volume(tmp_path / "missing.mhd")


def test_truncated_raw_is_an_error(tmp_path):
    write_volume(tmp_path / "oct.mhd", np.zeros((4, 8, 8), np.uint8), Geometry((1.0, 1.0, 1.0)))
    (tmp_path / "oct.raw").write_bytes(b"\0" * 10)
    with pytest.raises(VolumeError, match=r"oct\.mhd: its data file oct\.raw holds 10 bytes; the header's DimSize "
                                          r"and ElementType need 256 \(a truncated"):
        read_volume(tmp_path / "oct.mhd")


def test_write_rejects_2d(tmp_path):
    with pytest.raises(ValueError, match="expected a \\(z, y, x\\) array"):
        write_volume(tmp_path / "x.mhd", np.zeros((3, 4), np.uint8), Geometry((1.0, 1.0, 1.0)))


def _edit_header(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_compressed_flag_over_raw_bytes_is_refused(tmp_path):
    """SimpleITK reads such a file as an all-zero (or garbage) volume with no error."""
    write_volume(tmp_path / "oct.mhd", np.full((2, 3, 4), 7, np.uint8), Geometry((1.0, 1.0, 1.0)))
    _edit_header(tmp_path / "oct.mhd", "CompressedData = False", "CompressedData = True")
    with pytest.raises(VolumeError, match=r"oct\.mhd: CompressedData = True, but its data file oct\.raw is not "
                                          r"zlib data"):
        read_volume(tmp_path / "oct.mhd")


def test_really_compressed_data_is_read(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_volume(tmp_path / "oct.mhd", array, Geometry((1.0, 1.0, 1.0)))
    raw = tmp_path / "oct.raw"
    raw.write_bytes(zlib.compress(raw.read_bytes()))
    _edit_header(tmp_path / "oct.mhd", "CompressedData = False", f"CompressedData = True\nCompressedDataSize = "
                                                                  f"{raw.stat().st_size}")
    np.testing.assert_array_equal(read_volume(tmp_path / "oct.mhd")[0], array)


@pytest.mark.parametrize("data_file", ["../outside.raw", "/etc/passwd", "sub/../../outside.raw", "LIST"])
def test_data_file_outside_the_header_folder_is_refused(tmp_path, data_file):
    case = tmp_path / "case"
    write_volume(case / "oct.mhd", np.zeros((2, 3, 4), np.uint8), Geometry((1.0, 1.0, 1.0)))
    (tmp_path / "outside.raw").write_bytes(bytes(24))
    _edit_header(case / "oct.mhd", "ElementDataFile = oct.raw", f"ElementDataFile = {data_file}")
    with pytest.raises(VolumeError, match=r"oct\.mhd: ElementDataFile = .* points outside the header's folder"):
        read_volume(case / "oct.mhd")


@pytest.mark.parametrize("spacing", ["nan 1 1", "1 0 1", "1 -2 1", "inf 1 1", "1 1"])
def test_bad_spacing_is_reported_as_written(tmp_path, spacing):
    write_volume(tmp_path / "oct.mhd", np.zeros((2, 3, 4), np.uint8), Geometry((1.0, 1.0, 1.0)))
    _edit_header(tmp_path / "oct.mhd", "ElementSpacing = 1 1 1", f"ElementSpacing = {spacing}")
    with pytest.raises(VolumeError, match=rf"oct\.mhd: ElementSpacing = {spacing}; expected 3 positive finite"):
        read_volume(tmp_path / "oct.mhd")


def test_volume_without_bscans_is_refused(tmp_path):
    write_volume(tmp_path / "oct.mhd", np.zeros((2, 3, 4), np.uint8), Geometry((1.0, 1.0, 1.0)))
    _edit_header(tmp_path / "oct.mhd", "DimSize = 4 3 2", "DimSize = 4 3 0")
    with pytest.raises(VolumeError, match=r"oct\.mhd: DimSize = 4 3 0; expected 3 sizes >= 1"):
        read_volume(tmp_path / "oct.mhd")


@pytest.mark.parametrize("name", ["seg.mhd", "seg.mha", "seg.nii.gz"])
def test_every_format_round_trips_array_and_geometry(tmp_path, rng, name):
    geometry = Geometry(spacing_mm=(0.0117, 0.00195, 0.047), origin_mm=(-3.0, 1.5, 2.25),
                        direction=(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    array = rng.integers(0, 4, (3, 7, 5)).astype(np.uint8)
    write_volume(tmp_path / name, array, geometry)
    read, read_geometry = read_volume(tmp_path / name)
    assert read.dtype == np.uint8
    np.testing.assert_array_equal(read, array)
    np.testing.assert_allclose(read_geometry.spacing_mm, geometry.spacing_mm, rtol=1e-6)  # NIfTI: float32
    np.testing.assert_allclose(read_geometry.origin_mm, geometry.origin_mm, atol=1e-6)
    np.testing.assert_allclose(read_geometry.direction, geometry.direction, atol=1e-6)
    expected = ["seg.mhd", "seg.raw"] if name == "seg.mhd" else [name]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected  # no temporary left behind


def test_nii_gz_is_compressed_nifti(tmp_path):
    write_volume(tmp_path / "seg.nii.gz", np.zeros((8, 64, 64), np.uint8), Geometry((1.0, 1.0, 1.0)))
    data = (tmp_path / "seg.nii.gz").read_bytes()
    assert data[:2] == b"\x1f\x8b" and len(data) < 8 * 64 * 64 // 10


def test_write_rejects_an_unknown_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"seg\.nrrd: a volume file name must end with one of \.mhd, \.mha, "
                                         r"\.nii\.gz"):
        write_volume(tmp_path / "seg.nrrd", np.zeros((1, 2, 2), np.uint8), Geometry((1.0, 1.0, 1.0)))


@pytest.mark.parametrize("name, fmt, expected", [
    ("segmentation.mhd", "nii.gz", "segmentation.nii.gz"),
    ("segmentation.nii.gz", "mhd", "segmentation.mhd"),
    ("seg.v2.MHA", "mha", "seg.v2.mha"),
    ("labels", "mha", "labels.mha"),
])
def test_with_format(name, fmt, expected):
    assert with_format(name, fmt) == expected


def test_with_format_rejects_an_unknown_format():
    with pytest.raises(ValueError, match="one of mhd, mha, nii.gz, got 'nrrd'"):
        with_format("seg.mhd", "nrrd")


def test_find_volume_takes_the_named_file_first_then_any_format(tmp_path):
    assert find_volume(tmp_path, "segmentation.mhd") is None
    write_volume(tmp_path / "segmentation.nii.gz", np.zeros((1, 2, 2), np.uint8), Geometry((1.0, 1.0, 1.0)))
    assert find_volume(tmp_path, "segmentation.mhd") == tmp_path / "segmentation.nii.gz"
    write_volume(tmp_path / "segmentation.mhd", np.zeros((1, 2, 2), np.uint8), Geometry((1.0, 1.0, 1.0)))
    assert find_volume(tmp_path, "segmentation.mhd") == tmp_path / "segmentation.mhd"
    remove_volume(tmp_path / "segmentation.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmentation.nii.gz"]


def test_a_volume_the_disk_cannot_hold_is_an_oserror_naming_it_and_nothing_is_left(tmp_path, monkeypatch):
    import utils.io.mhd_io

    def full_disk(image, name, *args, **kwargs):
        Path(name).write_bytes(b"half")
        raise RuntimeError("Exception thrown in SimpleITK ImageFileWriter_Execute: x.cxx:1\n"
                           "ITK ERROR: MetaImageIO(0x5f00): File cannot be written\nReason: No space left on device")

    monkeypatch.setattr(utils.io.mhd_io.sitk, "WriteImage", full_disk)
    target = tmp_path / "labels.mhd"
    with pytest.raises(OSError) as caught:
        write_volume(target, np.zeros((2, 3, 4), np.uint8), Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)))
    assert caught.value.filename == str(target) and "No space left on device" in caught.value.strerror
    assert list(tmp_path.iterdir()) == []
