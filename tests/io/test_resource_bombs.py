"""Resource bombs and odd pixel types: tiny crafted files whose headers declare far more voxel data than the file
holds (or a zlib stream that inflates to far more than declared) are refused in one line naming the file, at once
and without allocating what they declare; valid files of the same kinds still read.

Covers utils/io/mhd_io.py (MetaImage with ``ElementDataFile = LOCAL``, ``CompressedData = True``, DimSize overflow,
multi-channel voxels, NIfTI) and utils/io/vendor_files.py (Topcon .fds/.fda, Heidelberg .vol and .e2e, OCT DICOM
encapsulated and deflated).
"""

from __future__ import annotations

import gzip
import re
import resource
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from utils.io.cases import Case, check_case
from utils.io.mhd_io import Geometry, VolumeError, read_volume, read_volume_info, write_volume
from utils.io.vendor_files import VendorFileError, VendorFileSettings, read_vendor_volume, vendor_file_vendor
from vendor_factory import write_dicom, write_topcon, write_vol

SECONDS = 5.0  # a refusal takes milliseconds; the bombs below took 10 s and gigabytes before
MEGABYTES = 300  # peak memory a refusal may add (ru_maxrss); the bombs declare gigabytes to terabytes


def _refused(read, path: Path, match: str, error_type: type = VolumeError) -> None:
    """``read(path)`` raises one line that starts with the file and matches ``match``, in well under
    ``SECONDS``, without raising the process's peak memory by more than ``MEGABYTES``."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    with pytest.raises(error_type) as error:
        read(path)
    seconds = time.perf_counter() - start
    added_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert re.search(match, message), message
    assert seconds < SECONDS, seconds
    assert added_mb < MEGABYTES, added_mb


def _header(dim_size: str = "4 3 2", data_file: str = "LOCAL", extra: str = "", element_type: str = "MET_UCHAR",
            compressed: bool = False) -> bytes:
    """A MetaImage header as SimpleITK writes one (``extra`` lines before ElementSpacing)."""
    return (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
            f"CompressedData = {compressed}\n{extra}ElementSpacing = 1 1 1\nDimSize = {dim_size}\n"
            f"ElementType = {element_type}\nElementDataFile = {data_file}\n").encode()


VOXELS = bytes(range(24))  # a (2, 3, 4) uint8 volume


def _zlib_bomb(n_mib: int) -> bytes:
    """A zlib stream of ~1 KiB per MiB of zeros it inflates to: one fully flushed block repeated (no checksum at
    the end: a reader that counts gives up long before it)."""
    compressor = zlib.compressobj(9)
    first = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return first + block * (n_mib - 1)


# --------------------------------------------------------------------------------------------------------------
# ElementDataFile = LOCAL: the data after the header, as HeaderSize places it
# --------------------------------------------------------------------------------------------------------------
def test_local_header_declaring_2_gb_over_10_bytes_is_refused(tmp_path):
    """SimpleITK attempted the allocation and failed with "No such file or directory" and ITK noise."""
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header("2000 1000 1000") + bytes(10))
    _refused(read_volume, path, r"the data after its header \(ElementDataFile = LOCAL\) holds 10 bytes; the "
                                r"header's DimSize and ElementType need 2000000000 \(a truncated")


@pytest.mark.parametrize("layout", ["right after", "HeaderSize = offset", "HeaderSize = -1", "mha"])
def test_valid_local_volume_reads(tmp_path, layout):
    path = tmp_path / ("oct.mha" if layout == "mha" else "oct.mhd")
    if layout == "right after":
        path.write_bytes(_header() + VOXELS)
    elif layout == "HeaderSize = offset":  # MetaIO: HeaderSize counts from the start of the .mhd itself
        length = len(_header(extra="HeaderSize = 000\n"))
        path.write_bytes(_header(extra=f"HeaderSize = {length + 5}\n") + b"notes" + VOXELS)
    elif layout == "HeaderSize = -1":
        path.write_bytes(_header(extra="HeaderSize = -1\n") + b"notes" + VOXELS)
    else:
        write_volume(path, np.frombuffer(VOXELS, np.uint8).reshape(2, 3, 4), Geometry((1.0, 1.0, 1.0)))
    array, _ = read_volume(path)
    np.testing.assert_array_equal(array.ravel(), np.frombuffer(VOXELS, np.uint8))


@pytest.mark.parametrize("extra, data, match", [
    ("HeaderSize = -1\n", VOXELS[:10], r"holds 10 bytes; the header's DimSize and ElementType need 24"),
    ("", VOXELS + b"more", r"holds 28 bytes; the header's DimSize and ElementType need 24"),
    ("HeaderSize = 20\n", VOXELS, r"HeaderSize = 20 puts the voxel data inside the \d+-byte header"),
    ("HeaderSize = many\n", VOXELS, r"HeaderSize = many; expected the number of bytes before the voxel data"),
], ids=["short at the end", "trailing bytes", "inside the header", "not a number"])
def test_local_data_that_does_not_match_the_header_is_refused(tmp_path, extra, data, match):
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header(extra=extra) + data)
    _refused(read_volume, path, match)


# --------------------------------------------------------------------------------------------------------------
# CompressedData = True: inflated in bounded pieces, no further than declared
# --------------------------------------------------------------------------------------------------------------
def test_zlib_bomb_declaring_1e13_bytes_is_refused_without_inflating(tmp_path):
    """A 2 MB bomb whose header declares 1e13 bytes took 10 s and 4.2 GB before."""
    bomb = _zlib_bomb(2048)  # ~2 MB inflating to 2 GiB
    (tmp_path / "oct.raw").write_bytes(bomb)
    (tmp_path / "oct.mhd").write_bytes(_header("10000000 1000 1000", "oct.raw", compressed=True))
    _refused(read_volume, tmp_path / "oct.mhd", rf"need 10000000000000 bytes, more than its data file oct\.raw can "
                                                rf"hold \({len(bomb)} compressed bytes; zlib inflates at most 1032")


def test_zlib_bomb_inflating_past_the_declared_size_stops_there(tmp_path):
    """The stream inflates to 2 GiB; the header declares 40 MB: counting stops just past 40 MB."""
    (tmp_path / "oct.raw").write_bytes(_zlib_bomb(2048))
    (tmp_path / "oct.mhd").write_bytes(_header("1000 1000 40", "oct.raw", compressed=True))
    _refused(read_volume, tmp_path / "oct.mhd", r"its data file oct\.raw inflates to more than 40000000 bytes of "
                                                r"voxels; the header's DimSize and ElementType need 40000000")


@pytest.mark.parametrize("voxels, match", [
    (VOXELS[:20], r"inflates to 20 bytes of voxels; the header's DimSize and ElementType need 24"),
    (VOXELS + b"more", r"inflates to more than 24 bytes of voxels"),
], ids=["shorter", "longer"])
def test_compressed_stream_of_another_size_is_refused(tmp_path, voxels, match):
    stream = zlib.compress(voxels)
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header(extra=f"CompressedDataSize = {len(stream)}\n", compressed=True) + stream)
    _refused(read_volume, path, match)


def test_truncated_compressed_stream_is_refused(tmp_path):
    stream = zlib.compress(VOXELS)
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header(extra=f"CompressedDataSize = {len(stream)}\n", compressed=True) + stream[:-8])
    _refused(read_volume, path, rf"CompressedDataSize = {len(stream)}, but the data after its header "
                                rf"\(ElementDataFile = LOCAL\) holds {len(stream) - 8} bytes")


def test_local_compressed_data_without_its_size_is_refused(tmp_path):
    """SimpleITK then inflates from the start of the header and returns garbage with no error."""
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header(compressed=True) + zlib.compress(VOXELS))
    _refused(read_volume, path, r"CompressedData = True and ElementDataFile = LOCAL, but no CompressedDataSize")


@pytest.mark.parametrize("name", ["oct.mhd", "oct.mha"])
def test_valid_compressed_volume_reads(tmp_path, name):
    """Written by SimpleITK: a .raw beside the .mhd, or LOCAL data in the .mha, each with CompressedDataSize."""
    array = np.arange(2 * 30 * 40, dtype=np.uint16).reshape(2, 30, 40)
    image = sitk.GetImageFromArray(array)
    sitk.WriteImage(image, str(tmp_path / name), useCompression=True)
    assert b"CompressedData = True" in (tmp_path / name).read_bytes()[:400]
    np.testing.assert_array_equal(read_volume(tmp_path / name)[0], array)


# --------------------------------------------------------------------------------------------------------------
# Declared sizes that overflow
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim_size, match", [
    ("2147483647 2147483647 2147483647", r"need 79228162403583873202826248184 \(a truncated"),
    ("3000000000 1 1", r"DimSize = 3000000000 1 1; expected sizes up to 2147483647"),
    ("99999999999999999999 1 1", r"DimSize = 99999999999999999999 1 1; expected sizes up to"),
])
def test_overflowing_dim_size_is_refused(tmp_path, dim_size, match):
    """int64 products wrapped round; SimpleITK reads a DimSize past 2**31 - 1 as 2**31."""
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header(dim_size, element_type="MET_DOUBLE") + bytes(10))
    _refused(read_volume_info, path, match)


# --------------------------------------------------------------------------------------------------------------
# Odd pixel types: one channel, scalar voxels
# --------------------------------------------------------------------------------------------------------------
def test_multichannel_metaimage_is_refused_naming_the_oct_mhd(tmp_path):
    """It used to pass the header check; prepare then failed naming a PNG in the work dir."""
    case = tmp_path / "Cirrus" / "A"
    case.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 3), np.uint8), isVector=True), str(case / "oct.mhd"))
    assert b"ElementNumberOfChannels = 3" in (case / "oct.mhd").read_bytes()
    _refused(read_volume_info, case / "oct.mhd", r"ElementNumberOfChannels = 3; expected 1 \(one grey value")
    _refused(lambda path: check_case(Case("A", "Cirrus", path, None)), case / "oct.mhd", r"ElementNumberOfChannels")


@pytest.mark.parametrize("channels", ["0", "-1", "1000000000000"])
def test_absurd_channel_count_is_refused(tmp_path, channels):
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header(extra=f"ElementNumberOfChannels = {channels}\n") + VOXELS)
    _refused(read_volume_info, path, rf"ElementNumberOfChannels = {channels}; expected 1")


@pytest.mark.parametrize("element_type", ["MET_STRING", "MET_UCHAR_ARRAY"])
def test_vector_element_type_is_refused(tmp_path, element_type):
    """SimpleITK reads these as vector voxels of one component."""
    path = tmp_path / "oct.mhd"
    path.write_bytes(_header(element_type=element_type) + VOXELS)
    _refused(read_volume_info, path, r"its voxels are vector of 8-bit .*; expected one channel")


def test_multichannel_nifti_is_refused(tmp_path):
    path = tmp_path / "oct.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 3), np.uint8), isVector=True), str(path))
    _refused(read_volume_info, path, r"its voxels are vector of 8-bit unsigned integer \(3 channel\(s\)\)")


# --------------------------------------------------------------------------------------------------------------
# NIfTI: SimpleITK reads a short file as a volume padded with zeros
# --------------------------------------------------------------------------------------------------------------
def _nifti_with_dims(path: Path, dims: tuple[int, int, int], keep_bytes: int | None = None) -> Path:
    """A valid NIfTI-1 of a (2, 3, 4) uint8 volume, its dim[1..3] then set to ``dims`` (x, y, z)."""
    write_volume(tmp := path.with_name("valid.nii.gz"), np.zeros((2, 3, 4), np.uint8), Geometry((1.0, 1.0, 1.0)))
    data = bytearray(gzip.decompress(tmp.read_bytes()))
    tmp.unlink()
    struct.pack_into("<3h", data, 42, *dims)
    data = bytes(data[:keep_bytes])
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def test_nifti_declaring_2_gb_over_100_bytes_is_refused(tmp_path):
    """It read as 1.8 GB of zeros before."""
    path = _nifti_with_dims(tmp_path / "segmentation.nii.gz", (30000, 30000, 2))
    _refused(read_volume, path, r"declares 30000 x 30000 x 2 voxels of 8 bits \(1800000000 bytes\), more than its "
                                r"\d+ gzip bytes can hold")


@pytest.mark.parametrize("name", ["segmentation.nii.gz", "segmentation.nii"])
def test_truncated_nifti_is_refused(tmp_path, name):
    path = _nifti_with_dims(tmp_path / name, (4, 3, 2), keep_bytes=352 + 20)
    _refused(read_volume, path, r"declares 4 x 3 x 2 voxels of 8 bits \(24 bytes from byte 352\), but the file "
                                r"holds 20 \(a truncated file\)")


# --------------------------------------------------------------------------------------------------------------
# Vendor files: the declared dimensions against the file's size, before the reader allocates
# --------------------------------------------------------------------------------------------------------------
SHAPE = (5, 24, 16)
GRADIENT = (np.indices(SHAPE).sum(axis=0) % 200).astype(np.uint8)  # not constant: oct-converter's DICOM writer
# rescales by max - min


def _settings() -> VendorFileSettings:
    return VendorFileSettings(cirrus_img_shape=(24, 16), cirrus_img_spacing_mm=(0.01, 0.002, 0.05),
                              e2e_spacing_xz_mm=(0.011, 0.12))


def _read_vendor(path: Path):
    return read_vendor_volume(path, _settings())


@pytest.mark.parametrize("suffix, chunk", [(".fds", b"@IMG_SCAN_03"), (".fda", b"@IMG_MOT_COMP_03")])
def test_topcon_declaring_1e13_voxels_is_refused(tmp_path, suffix, chunk):
    """A .fds declaring 100000 x 100000 x 1000 was reported as "(MemoryError: no detail)"."""
    path = write_topcon(tmp_path / f"case{suffix}", np.zeros(SHAPE, np.uint16), 6.0, 6.0, 2.6)
    data = bytearray(path.read_bytes())
    header = data.index(chunk) + len(chunk) + 4  # the chunk's body: scan_mode, width, height, bits, slices, ...
    struct.pack_into("<2I", data, header + 1, 100000, 100000)
    struct.pack_into("<I", data, header + 13, 1000)
    path.write_bytes(bytes(data))
    _refused(_read_vendor, path, r"its header declares 1000 B-scans of 100000 x 100000 uint16 voxels "
                                 r"\(20000000000000 bytes\), but the file holds \d+ bytes for them",
             VendorFileError)


@pytest.mark.parametrize("field_offset, value", [(12, 100000), (16, 10**9), (20, 100000), (48, 100000)],
                         ids=["size_x", "n_bscans", "size_y", "size_x_slo"])
def test_vol_declaring_more_than_the_file_is_refused(tmp_path, field_offset, value):
    path = write_vol(tmp_path / "case.vol", np.zeros(SHAPE, np.uint8), (0.01, 0.004, 0.1))
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, field_offset, value)
    path.write_bytes(bytes(data))
    _refused(_read_vendor, path, r"its header declares \d+ B-scans of \d+ x \d+ float32 voxels and a \d+ x \d+ "
                                 r"localizer \(\d+ bytes\), but the file holds", VendorFileError)


def test_vol_bscan_declaring_absurd_layer_segmentations_is_refused(tmp_path):
    path = write_vol(tmp_path / "case.vol", np.zeros(SHAPE, np.uint8), (0.01, 0.004, 0.1))
    data = bytearray(path.read_bytes())
    first_bscan = 2048 + 8 * 8  # after the file header and the 8 x 8 localizer
    struct.pack_into("<I", data, first_bscan + 48, 4_000_000_000)  # num_seg
    path.write_bytes(bytes(data))
    _refused(_read_vendor, path, r"B-scan 0 declares 4000000000 layer segmentations of 16 A-scans, more than its "
                                 r"\d+-byte header holds", VendorFileError)


def test_dicom_declaring_more_frames_than_the_file_holds_is_refused(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "case.dcm", GRADIENT, (0.01, 0.004, 0.1))
    dataset = pydicom.dcmread(path)
    dataset.NumberOfFrames, dataset.Rows, dataset.Columns = 1000000, 65535, 65535
    dataset.save_as(path)
    _refused(_read_vendor, path, r"its header declares 1000000 frame\(s\) of 65535 x 65535 pixels", VendorFileError)


def test_compressed_dicom_declaring_absurd_frames_is_refused(tmp_path):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    path = write_dicom(tmp_path / "case.dcm", GRADIENT, (0.01, 0.004, 0.1))
    dataset = pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    dataset["PixelData"].is_undefined_length = True
    dataset.NumberOfFrames, dataset.Rows, dataset.Columns, dataset.BitsAllocated = 100000, 65535, 65535, 8
    dataset.save_as(path, enforce_file_format=True)
    _refused(_read_vendor, path, r"declares 100000 frame\(s\) of 65535 x 65535 pixels, 1 sample\(s\) of 8 bits "
                                 r"\(\d+ bytes\), more than its \d+ bytes of compressed data can hold",
             VendorFileError)


@pytest.mark.parametrize("suffix", [".fds", ".vol", ".dcm"])
def test_valid_vendor_files_still_read(tmp_path, suffix):
    path = tmp_path / f"case{suffix}"
    {".fds": lambda: write_topcon(path, GRADIENT, 6.0, 6.0, 2.6),
     ".vol": lambda: write_vol(path, GRADIENT, (0.01, 0.004, 0.1)),
     ".dcm": lambda: write_dicom(path, GRADIENT, (0.01, 0.004, 0.1))}[suffix]()
    assert _read_vendor(path).array.shape == SHAPE


# --------------------------------------------------------------------------------------------------------------
# Heidelberg .e2e: directories, slice numbers and chunks against the file's size, before oct-converter reads it
# --------------------------------------------------------------------------------------------------------------
E2E_DIRECTORY = 36 + 52  # after the header and the main directory
E2E_ENTRIES = E2E_DIRECTORY + 52
# E2E's 16-bit floats (10-bit mantissa, 6-bit exponent biased by 63): exponents 55..62 are values 2**-8..1, which
# Heyex's display scale spreads over 0..255
E2E_RAW = (((55 + np.indices(SHAPE)[:2].sum(axis=0) % 8) << 10) | (np.indices(SHAPE)[2] * 61 % 1024)).astype(np.uint16)


def _build(structure, **fields) -> bytes:
    """An oct-converter ``e2e_binary`` struct built from ``fields``, every other field zero."""
    return structure.build({**structure.parse(bytes(structure.sizeof())), **fields})


def _write_e2e(path: Path, raw: np.ndarray, depth_mm: float = 0.0039, multiple: bool = False,
               dangling_entry: bool = False) -> Path:
    """A Heidelberg .e2e of the ``(z, y, x)`` E2E float codes ``raw``, laid out with oct-converter's structs: header,
    main directory, one directory of entries, then a right-eye chunk (type 3) and per B-scan a metadata chunk
    (10004, scaley = ``depth_mm``) and an OCT image chunk. ``multiple``: behind a 64-byte E2EMultipleVolumeFile
    prefix; ``dangling_entry``: one more entry, pointing past the end of the file (as in anonymised exports)."""
    from oct_converter.readers.binary_structs import e2e_binary as e2e

    ticks = (11644473600 + 1_600_000_000) * 10**7  # 2020, in 100 ns since 1601
    chunks = [(3, 0, -1, struct.pack("<I", 0) + b"R")]  # (type, ind, slice id, body)
    for index, bscan in enumerate(raw):
        height, width = bscan.shape
        chunks.append((10004, 0, 2 * index, _build(e2e.bscan_metadata, imgSizeY=height, imgSizeX=width,
                                                   scaley=depth_mm, acquisitionTime=ticks)))
        chunks.append((0x40000000, 1, 2 * index, _build(e2e.image_structure, size=2 * height * width, height=height,
                                                        width=width) + bscan.astype("<u2").tobytes()))
    n_entries = len(chunks) + dangling_entry
    entries, bodies, start = b"", b"", E2E_ENTRIES + 44 * n_entries
    for index, (kind, ind, slice_id, body) in enumerate(chunks):
        ids = dict(patient_db_id=1, study_id=1, series_id=1, slice_id=slice_id, type=kind)
        entries += _build(e2e.sub_directory_structure, pos=E2E_ENTRIES + 44 * index, start=start,
                          size=60 + len(body), **ids)
        bodies += _build(e2e.chunk_structure, magic3="MDbData", pos=start, size=len(body), ind=ind, **ids) + body
        start += 60 + len(body)
    if dangling_entry:
        entries += _build(e2e.sub_directory_structure, pos=E2E_ENTRIES + 44 * len(chunks), start=10**9, size=64,
                          patient_db_id=1, study_id=1, series_id=1, slice_id=-1, type=3)
    data = (_build(e2e.header_structure, magic1="CMDb", version=0x64)
            + _build(e2e.main_directory_structure, magic2="MDbMDir", num_entries=n_entries, current=E2E_DIRECTORY)
            + _build(e2e.main_directory_structure, magic2="MDbDir", num_entries=n_entries, current=E2E_DIRECTORY)
            + entries + bodies)
    path.write_bytes(b"E2EMultipleVolumeFile".ljust(64, b"\0") + data if multiple else data)
    return path


def _e2e_chunk(data: bytes, index: int) -> int:
    """The offset of the ``index``-th chunk (0: the eye chunk, 1 + 2 z: B-scan z's metadata, 2 + 2 z: its image)."""
    return struct.unpack_from("<I", data, E2E_ENTRIES + 44 * index + 4)[0]


E2E_BOMBS = {  # case: (patch the bytes of a valid .e2e, the refusal's message)
    "image of 1e10 pixels": (lambda data: struct.pack_into("<2I", data, _e2e_chunk(data, 2) + 72, 100000, 100000),
                             r"its header declares an OCT B-scan of 100000 x 100000 uint16 pixels in its chunk at "
                             r"byte \d+ \(20000000000 bytes\), but the file holds \d+ bytes for them"),
    "directory cycle": (lambda data: struct.pack_into("<I", data, E2E_DIRECTORY + 44, E2E_DIRECTORY),
                        rf"its chain of directories cycles back to byte {E2E_DIRECTORY}"),
    "directory past the end": (lambda data: struct.pack_into("<I", data, E2E_DIRECTORY + 44, 10**9),
                               r"its chain of directories points past the end of the file, to byte 1000000000"),
    "1e8 entries": (lambda data: struct.pack_into("<I", data, E2E_DIRECTORY + 36, 10**8),
                    rf"its header declares a directory of 100000000 entries at byte {E2E_DIRECTORY} \(4400000000 "
                    rf"bytes\)"),
    "slice number 2**31 - 1": (lambda data: struct.pack_into("<i", data, E2E_ENTRIES + 28, 2**31 - 1),
                               r"its directory numbers slices up to 2147483647, 1073741824 B-scans in all, more than "
                               r"its \d+ bytes can hold"),
    "chunk body of 4 GB": (lambda data: struct.pack_into("<I", data, _e2e_chunk(data, 0) + 24, 4_000_000_000),
                           r"its header declares a chunk body at byte \d+ \(4000000000 bytes\)"),
    "contour of 1e9 values": (lambda data: (struct.pack_into("<I", data, _e2e_chunk(data, 1) + 52, 10019),
                                            struct.pack_into("<I", data, _e2e_chunk(data, 1) + 72, 10**9)),
                              r"its header declares 1000000000 float32 contour values in its chunk at byte \d+ "
                              r"\(4000000000 bytes\)"),
}


@pytest.mark.parametrize("bomb", list(E2E_BOMBS))
def test_e2e_declaring_more_than_the_file_is_refused(tmp_path, bomb):
    """oct-converter allocated what these declare (the cycle: a directory list growing for ever)."""
    patch, match = E2E_BOMBS[bomb]
    path = _write_e2e(tmp_path / "case.e2e", E2E_RAW)
    data = bytearray(path.read_bytes())
    patch(data)
    path.write_bytes(bytes(data))
    _refused(_read_vendor, path, match, VendorFileError)


@pytest.mark.parametrize("layout", ["plain", "E2EMultipleVolumeFile", "entry past the end"])
def test_valid_e2e_still_reads(tmp_path, layout):
    from oct_converter.readers import E2E

    path = _write_e2e(tmp_path / "case.e2e", E2E_RAW, multiple=layout == "E2EMultipleVolumeFile",
                      dangling_entry=layout == "entry past the end")
    result = _read_vendor(path)
    assert result.vendor == "Spectralis" and result.laterality == "R"
    np.testing.assert_allclose(result.geometry.spacing_mm, (0.011, 0.0039, 0.12), rtol=1e-6)
    reader = E2E(path)  # its float codes and display scale, to uint8 as vendor_files does
    floats = np.array([reader.uint16_to_ufloat16(int(code)) for code in E2E_RAW.ravel()]).reshape(SHAPE)
    expected = np.rint(np.clip(reader.vol_intensity_transform(floats), 0, 1) * 255).astype(np.uint8)
    assert len(np.unique(expected)) > 20  # the codes span the display scale
    np.testing.assert_array_equal(result.array, expected)


# --------------------------------------------------------------------------------------------------------------
# DICOM with the deflated transfer syntax: pydicom inflates the whole data set even to read its header
# --------------------------------------------------------------------------------------------------------------
def _deflated_dicom(path: Path, dataset=None) -> Path:
    """``path`` (an OCT DICOM), or ``dataset`` saved there, in the deflated transfer syntax."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    dataset = dataset or pydicom.dcmread(path)
    dataset.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_deflated_dicom_inflating_past_its_declared_size_is_refused(tmp_path):
    """The valid data set followed by a raw deflate stream of 2 GiB of zeros (2 MB in the file): it declares 5 x 24
    x 16 uint16 pixels; inflating stops just past them and 16 MiB of other attributes."""
    path = _deflated_dicom(write_dicom(tmp_path / "case.dcm", GRADIENT, (0.01, 0.004, 0.1)))
    data = path.read_bytes()
    start = 132 + 12 + struct.unpack_from("<I", data, 132 + 8)[0]  # after FileMetaInformationGroupLength's group
    compressor = zlib.compressobj(9, wbits=-zlib.MAX_WBITS)
    data_set = zlib.decompress(data[start:], -zlib.MAX_WBITS)
    stream = compressor.compress(data_set) + compressor.flush(zlib.Z_FULL_FLUSH)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    path.write_bytes(data[:start] + stream + block * 2048)
    match = (r"its deflated data set inflates to more than 16781056 bytes, but its header declares 5 frame\(s\) of "
             r"24 x 16 pixels, 1 sample\(s\) of 16 bits \(3840 bytes\)")
    _refused(_read_vendor, path, match, VendorFileError)
    _refused(lambda file: vendor_file_vendor(file, ("Cirrus", "Spectralis", "Topcon")), path, match,
             VendorFileError)


def test_deflated_dicom_declaring_absurd_frames_is_refused_before_inflating(tmp_path):
    import pydicom

    path = write_dicom(tmp_path / "case.dcm", GRADIENT, (0.01, 0.004, 0.1))
    dataset = pydicom.dcmread(path)
    dataset.NumberOfFrames, dataset.Rows, dataset.Columns = 100000, 65535, 65535
    _deflated_dicom(path, dataset)
    _refused(_read_vendor, path, r"declares 100000 frame\(s\) of 65535 x 65535 pixels, 1 sample\(s\) of 16 bits "
                                 r"\(\d+ bytes\), more than its \d+ bytes of compressed data can hold",
             VendorFileError)


def test_valid_deflated_dicom_still_reads(tmp_path):
    plain = write_dicom(tmp_path / "plain.dcm", GRADIENT, (0.01, 0.004, 0.1))
    deflated = _deflated_dicom(write_dicom(tmp_path / "case.dcm", GRADIENT, (0.01, 0.004, 0.1)))
    assert b"1.2.840.10008.1.2.1.99" in deflated.read_bytes()[:400]
    np.testing.assert_array_equal(_read_vendor(deflated).array, _read_vendor(plain).array)
    assert vendor_file_vendor(deflated, ("Cirrus", "Spectralis", "Topcon")) == "Topcon"
