"""Reading OCT volumes from the devices' own exports, through maintained readers, into what :func:`read_volume`
gives for MetaImage: a ``(z, y, x)`` = (B-scan, depth, width) array, a :class:`Geometry` (spacing ``(x, y, z)`` in
mm, origin 0, identity direction), and the vendor (one of ``config.VENDORS``).

========================  =====================================  ==================  ================================
file                      reader                                 vendor from         spacing from
========================  =====================================  ==================  ================================
Heidelberg ``.vol``       eyepy ``HeVolReader``                  the format          header: scale_x, scale_y, distance
Zeiss Cirrus ``.img``     oct-converter ``IMG``                  the format          not in the file:
                                                                                     CIRRUS_IMG_SPACING_MM
Topcon ``.fds``/``.fda``  oct-converter ``FDS``/``FDA``          the format          @PARAM_SCAN_04/02 chunk (else
                                                                                     TOPCON_SPACING_MM)
Heidelberg XML export     eyepy ``HeXmlReader`` (the ``.xml``    the format          ScaleX, ScaleY of the OCT images;
``.xml`` + B-scan images  beside its B-scan image files)                             B-scan distance from their
                                                                                     Start/End positions
Heidelberg ``.e2e``       oct-converter ``E2E``                  the format          depth: B-scan header (scaley);
                                                                                     width, B-scan distance:
                                                                                     E2E_SPACING_XZ_MM
OCT DICOM ``.dcm``        oct-converter ``Dicom`` (pydicom)      Manufacturer tag    PixelSpacing, frame positions
                                                                                     (else SliceThickness)
========================  =====================================  ==================  ================================

Intensities: a uint8 volume is kept; a uint16 volume whose values all lie in 0..255 becomes uint8 (lossless; the
pipeline scales other uint16 volumes by 255/65536, as RETOUCH's Spectralis ones); the float reflectivities of
``.vol`` and ``.e2e`` become uint8 on Heyex's display scale (eyepy's and oct-converter's log transform); the XML
export's B-scan images already are 8-bit display-scale images.

A file these readers cannot use raises :class:`VendorFileError`: one line naming the file and the problem. Before a
reader allocates the voxels, the sizes the file's header declares are checked against the bytes the file holds (the
readers would otherwise try to allocate whatever a corrupt header says: terabytes for a few bytes of file), and a
deflated DICOM data set is inflated, counting, no further than its declared pixel data and a header margin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import mmap
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Sequence

import numpy as np

import config
from utils.io.mhd_io import Geometry, VolumeError, read_volume
from utils.io.vendors import vendor_from_path
from utils.stage_settings import settings_from_config

# Suffix -> the vendor whose devices alone write it (DICOM: from its Manufacturer tag). Names as in config.VENDORS.
FORMAT_VENDORS = {".vol": "Spectralis", ".e2e": "Spectralis", ".xml": "Spectralis", ".img": "Cirrus",
                  ".fds": "Topcon", ".fda": "Topcon", ".dcm": None, ".dicom": None}
HEYEX_XML_ROOT = b"<HEDX"  # the root element of a Heyex XML export, within its first bytes
VENDOR_SUFFIXES = tuple(FORMAT_VENDORS)
# The vendor names the readers give a volume: every vendor setting names some of these (VENDORS may list fewer).
KNOWN_VENDORS = tuple(sorted({vendor for vendor in FORMAT_VENDORS.values() if vendor}))
# DICOM Manufacturer (lower case, a part of it) -> vendor.
_MANUFACTURERS = {"heidelberg": "Spectralis", "zeiss": "Cirrus", "topcon": "Topcon"}
# How many times its size compressed DICOM pixel data may declare: JPEG codes a flat 8x8 block in a few bits (at most
# about 1:128 for 8-bit grey), RLE at most 1:64, deflate 1:1032; speckled OCT B-scans compress far less. A header
# declaring more is corrupt; refused before pydicom allocates the frames.
_DICOM_MAX_COMPRESSION_RATIO = 1032
# Bytes a deflated DICOM data set may hold besides its pixel data (patient, study and per-frame attributes: some
# hundred kB for an OCT volume). Its image attributes are read from this many first inflated bytes.
_DICOM_HEADER_BYTES = 1 << 24
_INFLATE_PIECE_BYTES = 1 << 22  # deflated data is inflated in pieces of at most this many bytes
# Heidelberg .e2e as oct-converter 0.7.0 reads it (readers/e2e.py, binary_structs/e2e_binary.py): a 36-byte header,
# a 52-byte main directory, directories of a 52-byte header and 44-byte entries, chunks of a 60-byte header and a
# body. An entry: position, chunk start, size, patient, study, series and slice ids, chunk type.
_E2E_ENTRY = np.dtype([("pos", "<u4"), ("start", "<u4"), ("size", "<u4"), ("unknown", "<u4"), ("patient", "<u4"),
                       ("study", "<u4"), ("series", "<u4"), ("slice", "<i4"), ("unknown2", "<u4"),
                       ("type", "<u4"), ("unknown4", "<u4")])
_E2E_CHUNK_HEADER_BYTES = 60
_E2E_IMAGE, _E2E_CONTOUR = 0x40000000, 10019  # chunk types: image (20-byte header, pixels), layer contour


class VendorFileError(VolumeError):
    """A vendor file that cannot be used; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class VendorFileSettings:
    """What reading a vendor file reads of the config, built once per run (:meth:`from_config`). Each field is the
    config.py setting of the same name in upper case (see config.py for its meaning); the defaults are config.py's,
    so a test names only what it changes.

    Attributes:
        vendors: the vendors accepted (``VENDORS``); a file of another vendor is refused.
        cirrus_img_shape: ``(depth, width)`` pixels of a Zeiss ``.img`` B-scan, which the file does not say.
        cirrus_img_spacing_mm: ``(x, y, z)`` mm for Zeiss ``.img``, or ``()``: not set (such a file is refused).
        topcon_spacing_mm: ``(x, y, z)`` mm for Topcon files without a @PARAM_SCAN_04/02 chunk, or ``()``.
        e2e_spacing_xz_mm: ``(x, z)`` mm for Heidelberg ``.e2e`` (the file gives the depth spacing), or ``()``.
    """

    vendors: tuple[str, ...] = config.VENDORS
    cirrus_img_shape: tuple[int, int] = config.CIRRUS_IMG_SHAPE
    cirrus_img_spacing_mm: tuple[float, ...] = config.CIRRUS_IMG_SPACING_MM
    topcon_spacing_mm: tuple[float, ...] = config.TOPCON_SPACING_MM
    e2e_spacing_xz_mm: tuple[float, ...] = config.E2E_SPACING_XZ_MM

    @classmethod
    def from_config(cls, cfg) -> VendorFileSettings:
        """The vendor-file settings of an effective config (config.py with ``--set``, or a loaded config)."""
        return settings_from_config(cls, cfg)


@dataclasses.dataclass(frozen=True)
class VendorVolume:
    """An OCT volume read from a vendor file.

    Attributes:
        array: ``(z, y, x)`` uint8 or uint16.
        geometry: spacing ``(x, y, z)`` mm from the file (or the setting named in the module table).
        vendor: one of ``config.VENDORS``.
        laterality: ``"R"``, ``"L"`` or ``""`` when the file does not say; for ``.vol`` and XML exports also
            ``""`` when the B-scans' positions show other than horizontal lines scanned left to right (the ETDRS
            nasal/temporal naming relies on it; the other formats' positions are not read: their B-scans are
            taken to be a horizontal macular cube, as the devices scan by default).
    """

    array: np.ndarray
    geometry: Geometry
    vendor: str
    laterality: str = ""


def is_vendor_file(path: str | Path) -> bool:
    """Whether ``path`` ends with a suffix of ``VENDOR_SUFFIXES`` (case-insensitive)."""
    return Path(path).suffix.lower() in FORMAT_VENDORS


def vendor_file_vendor(path: str | Path, vendors: Sequence[str]) -> str:
    """The vendor of a vendor file without reading its voxels: the format's for the proprietary formats, the
    Manufacturer tag (else a folder of the path naming a vendor) for DICOM.

    Raises:
        VendorFileError: not a vendor file, an unreadable DICOM header, or a vendor not in ``vendors``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMAT_VENDORS:
        raise VendorFileError(f"{path}: not a vendor file; expected one of {', '.join(VENDOR_SUFFIXES)}")
    vendor = FORMAT_VENDORS[suffix]
    if suffix == ".xml":
        _check_heyex_xml(path)
    if vendor is None:
        import pydicom

        try:
            _check_dicom_deflate(path)
            manufacturer = str(pydicom.dcmread(path, stop_before_pixels=True).get("Manufacturer", ""))
        except VendorFileError:
            raise
        except Exception as error:  # noqa: BLE001 - pydicom on untrusted bytes
            raise VendorFileError(f"{path}: not a readable DICOM file ({type(error).__name__}: "
                                  f"{' '.join(str(error).split())[:200]})") from None
        vendor = _dicom_vendor(path, manufacturer, vendors)
    if vendor not in vendors:
        raise VendorFileError(f"{path}: a {vendor} file, but VENDORS is {tuple(vendors)}")
    return vendor


def _dicom_vendor(path: Path, manufacturer: str, vendors: Sequence[str]) -> str:
    """The vendor a DICOM's Manufacturer names, else the one a folder of its path (and the folder above) names."""
    vendor = next((name for key, name in _MANUFACTURERS.items() if key in manufacturer.lower()), None)
    vendor = vendor or vendor_from_path(Path(*path.resolve().parent.parts[-2:]), vendors)
    if vendor is None:
        raise VendorFileError(f"{path}: unknown vendor: Manufacturer is {manufacturer!r} and no folder of the path "
                              f"names one of {tuple(vendors)}; put it under a folder named after its vendor")
    return vendor


def _geometry(path: Path, spacing_mm: Sequence[float], source: str) -> Geometry:
    """A Geometry with ``spacing_mm`` ``(x, y, z)``, checked to be 3 positive finite numbers."""
    try:
        spacing = tuple(float(value) for value in spacing_mm)
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3 or not all(math.isfinite(value) and value > 0 for value in spacing):
        raise VendorFileError(f"{path}: voxel spacing (x, y, z) from {source} is {tuple(spacing_mm)}; expected 3 "
                              f"positive numbers in mm")
    return Geometry(spacing_mm=spacing)


def _stack(path: Path, bscans: Sequence[np.ndarray]) -> np.ndarray:
    """B-scans ``(y, x)`` stacked to ``(z, y, x)``; one line when there are none or their sizes differ."""
    shapes = {np.shape(bscan) for bscan in bscans}
    if not bscans or len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise VendorFileError(f"{path}: expected B-scans of one 2-D size, got {len(bscans)} of sizes "
                              f"{sorted(shapes)}")
    return np.stack([np.asarray(bscan) for bscan in bscans], axis=0)


def _intensities(path: Path, array: np.ndarray) -> np.ndarray:
    """uint8 kept; uint16 within 0..255 to uint8; floats in [0, 1] (display scale) to uint8 0..255."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return array.astype(np.uint8) if array.size and int(array.max()) <= 255 else array
    if np.issubdtype(array.dtype, np.floating):
        return np.rint(np.clip(np.nan_to_num(array), 0.0, 1.0) * 255.0).astype(np.uint8)
    raise VendorFileError(f"{path}: OCT voxels are {array.dtype}; expected uint8, uint16 or float intensities")


def _spacing_setting(path: Path, value: Sequence[float], name: str, length: int, what: str) -> tuple[float, ...]:
    """A spacing setting that must be set for this file, else one line saying which ``--set`` supplies it."""
    if len(value) != length:
        example = {3: "(0.0117,0.00195,0.047)", 2: "(0.0117,0.047)"}[length]
        raise VendorFileError(f"{path}: the file does not hold {what}; give it with --set {name}={example} (mm)")
    return tuple(value)


def _declared_beyond_file(path: Path, declared: str, n_bytes: int, n_available: int) -> VendorFileError:
    """The one-line error for a header that declares more voxel data than the file holds."""
    return VendorFileError(f"{path}: its header declares {declared} ({n_bytes} bytes), but the file holds "
                           f"{max(n_available, 0)} bytes for them; expected a complete {path.suffix.lower()} file "
                           f"(a truncated or corrupt one)")


def _check_vol_size(path: Path) -> None:
    """Checks a Heidelberg ``.vol`` header against the file's size before eyepy reads it: the 2048-byte header, the
    localizer (size_x_slo x size_y_slo bytes), then per B-scan its own header (bscan_hdr_size bytes, of them 256 +
    4 x num_seg x size_x for the layer segmentations) and size_y x size_x float32 voxels, as eyepy's ``vol_format``
    reads them (it allocates each part's bytes as declared)."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        header = file.read(2048)
        if len(header) < 2048:
            return  # eyepy reports the short header
        size_x, n_bscans, size_y = struct.unpack_from("<3I", header, 12)
        size_x_slo, size_y_slo = struct.unpack_from("<2I", header, 48)
        offset, bscan_bytes = 2048 + size_x_slo * size_y_slo, 4 * size_x * size_y
        n_bytes = offset - 2048 + n_bscans * (256 + bscan_bytes)  # each B-scan header holds at least 256 bytes
        if 2048 + n_bytes > size:
            raise _declared_beyond_file(path, f"{n_bscans} B-scans of {size_y} x {size_x} float32 voxels and a "
                                              f"{size_y_slo} x {size_x_slo} localizer", n_bytes, size - 2048)
        for index in range(n_bscans):  # at most size / 256 steps: each advances by at least 256 bytes
            file.seek(offset)
            bscan_header = file.read(52)
            if len(bscan_header) == 52:
                header_bytes, n_layers = struct.unpack_from("<I32xI", bscan_header, 12)  # bscan_hdr_size, num_seg
                if 256 + 4 * n_layers * size_x > header_bytes:
                    raise VendorFileError(f"{path}: B-scan {index} declares {n_layers} layer segmentations of "
                                          f"{size_x} A-scans, more than its {header_bytes}-byte header holds; "
                                          f"expected a complete .vol file (a corrupt one)")
                offset += header_bytes + bscan_bytes
            if len(bscan_header) < 52 or offset > size:
                raise VendorFileError(f"{path}: B-scan {index} of {n_bscans} runs past the end of the {size}-byte "
                                      f"file; expected a complete .vol file (a truncated or corrupt one)")


def _read_vol(path: Path, settings: VendorFileSettings) -> VendorVolume:
    from eyepy.io.he import HeVolReader

    _check_vol_size(path)
    volume = HeVolReader(path).volume
    # eyepy's data: (n_bscans, size_y, size_x) uint8 on Heyex's display scale (from_vol_intensity)
    spacing = (volume.scale_x, volume.scale_y, volume.scale_z)
    laterality = _raster_laterality(_laterality(volume.laterality), volume.meta["bscan_meta"])
    return VendorVolume(np.asarray(volume.data), _geometry(path, spacing, "the .vol header"), "Spectralis",
                        laterality)


def found_in_folder(path: Path) -> bool:
    """Whether a file met while searching a folder is a vendor file to read: a ``VENDOR_SUFFIXES`` suffix, not a
    macOS ``._`` resource-fork copy, and for ``.xml`` a Heyex export (other XML files beside the data, such as
    settings or notes, are passed over; one that cannot be read is kept, so that reading it reports why)."""
    if not is_vendor_file(path) or path.name.startswith("._"):
        return False
    if path.suffix.lower() != ".xml":
        return True
    try:
        return _is_heyex_xml(path)
    except OSError:
        return True


def _is_heyex_xml(path: Path) -> bool:
    """Whether ``path`` starts like a Heyex XML export (``<HEDX>`` root in its first 1 KiB). Raises OSError."""
    with open(path, "rb") as file:
        return HEYEX_XML_ROOT in file.read(1024)


def _check_heyex_xml(path: Path) -> None:
    """Raises VendorFileError unless ``path`` is a Heyex XML export (:func:`_is_heyex_xml`)."""
    try:
        heyex = _is_heyex_xml(path)
    except OSError as error:
        raise VendorFileError(f"{path}: cannot be read ({error.strerror})") from None
    if not heyex:
        raise VendorFileError(f"{path}: not a Heidelberg Heyex XML export (no <HEDX> root element); move other XML "
                              f"files out of the inputs")


def _laterality(value: object) -> str:
    """``"R"`` or ``"L"`` from a file's eye field (``R``/``OD``, ``L``/``OS``, any case); ``""`` for anything else."""
    return {"R": "R", "OD": "R", "L": "L", "OS": "L"}.get(str(value or "").strip().upper(), "")


def _raster_laterality(laterality: str, bscan_meta: Sequence) -> str:
    """The laterality where the B-scans' start and end positions (eyepy's ``bscan_meta``, in mm on the fundus
    image) show horizontal lines scanned left to right, so that column 0 is the left of the fundus view and the
    ETDRS quadrants can be named nasal and temporal; ``""`` otherwise (vertical, radial or right-to-left scans)."""
    for meta in bscan_meta:
        (start_x, start_y), (end_x, end_y) = meta["start_pos"], meta["end_pos"]
        if not end_x - start_x > 0 or abs(end_y - start_y) > 0.1 * (end_x - start_x):
            return ""
    return laterality


def _read_heyex_xml(path: Path, settings: VendorFileSettings) -> VendorVolume:
    """A Heyex XML export through eyepy's ``HeXmlReader`` (module table)."""
    from eyepy.io.he import HeXmlReader

    _check_heyex_xml(path)
    reader = HeXmlReader(path)
    n_bscans = reader.parsed_values["n_bscans"]
    if n_bscans < 2:
        raise VendorFileError(f"{path}: the export holds {n_bscans} OCT B-scan(s); a volume needs at least 2 (the "
                              f"B-scan distance comes from their positions)")
    volume = reader.volume  # reads the B-scan images the XML names, beside it; eyepy's data: (z, y, x) uint8
    spacing = (volume.scale_x, volume.scale_y, volume.scale_z)
    # eyepy maps every Laterality but "R" to OS: read the element itself
    laterality = _laterality(reader.xml_root[0].findtext("./Patient/Study/Series/Laterality"))
    return VendorVolume(np.asarray(volume.data), _geometry(path, spacing, "the XML's scales and B-scan positions"),
                        "Spectralis", _raster_laterality(laterality, reader.bscan_meta))


def _read_img(path: Path, settings: VendorFileSettings) -> VendorVolume:
    from oct_converter.readers import IMG

    rows, cols = settings.cirrus_img_shape
    size = path.stat().st_size
    if size == 0 or size % (rows * cols):
        raise VendorFileError(f"{path}: {size} bytes is not a whole number of {rows} x {cols} B-scans (a "
                              f"truncated file, or another scan size: --set CIRRUS_IMG_SHAPE=(depth,width))")
    spacing = _spacing_setting(path, settings.cirrus_img_spacing_mm, "CIRRUS_IMG_SPACING_MM", 3,
                               "its voxel spacing (x, y, z)")
    # oct-converter lays each B-scan out as (rows, cols) = (depth, width) from the A-scan-major bytes
    oct_volume = IMG(path).read_oct_volume(rows=rows, cols=cols)
    return VendorVolume(_stack(path, oct_volume.volume), _geometry(path, spacing, "CIRRUS_IMG_SPACING_MM"),
                        "Cirrus", _laterality(oct_volume.laterality))


class _NumpyWithBinaryFromstring:
    """numpy, with ``fromstring(bytes, dtype)`` answered by ``frombuffer``: oct-converter 0.7.0's FDS and FDA readers
    parse their chunks with ``np.fromstring``'s binary mode, which numpy 2 removed (``ValueError: The binary mode of
    fromstring is removed``); everything else is numpy itself."""

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def fromstring(string, dtype=float, count=-1, *, sep=""):
        if sep == "" and isinstance(string, (bytes, bytearray, memoryview)):
            return np.frombuffer(string, dtype=dtype, count=count).copy()
        return np.fromstring(string, dtype=dtype, count=count, sep=sep)


def _topcon_readers():
    """oct-converter's FDS and FDA classes, their modules' numpy given binary ``fromstring`` back where the
    installed numpy lacks it."""
    from oct_converter.readers import fda, fds

    for module in (fda, fds):
        try:
            np.fromstring(b"\x00", dtype=np.uint8)
        except ValueError:
            module.np = _NumpyWithBinaryFromstring()
    return fds.FDS, fda.FDA


def _topcon_chunks(path: Path) -> dict[bytes, tuple[int, int]]:
    """Chunk name -> (offset of its body, declared size) of a Topcon file, walked as oct-converter walks it (a
    15-byte file header, then per chunk a name-length byte, the name, a uint32 size and the body) without reading
    the bodies; a name met twice keeps its last chunk, as the FDS reader does."""
    chunks = {}
    with open(path, "rb") as file:
        file.seek(15)
        while (name_size := file.read(1)) and name_size[0]:
            name, chunk_size = file.read(name_size[0]), file.read(4)
            if len(chunk_size) < 4:
                break
            chunks[name] = (file.tell(), struct.unpack("<I", chunk_size)[0])
            file.seek(chunks[name][1], 1)
    return chunks


def _check_topcon_size(path: Path) -> None:
    """Checks the OCT chunk of a Topcon ``.fds`` (@IMG_SCAN_03) or ``.fda`` (@IMG_JPEG, else @IMG_MOT_COMP_03)
    against the file's size before oct-converter reads it: the raw chunks hold a 22-byte header (width, height,
    number of B-scans) and then width x height x B-scans uint16 voxels, read in one piece of the declared size; the
    JPEG chunk a 4-byte length before each B-scan's JPEG (Pillow limits what one JPEG may decode to)."""
    size, chunks = path.stat().st_size, _topcon_chunks(path)
    raw_chunk = b"@IMG_SCAN_03" if path.suffix.lower() == ".fds" else b"@IMG_MOT_COMP_03"
    jpeg = path.suffix.lower() == ".fda" and b"@IMG_JPEG" in chunks
    name = b"@IMG_JPEG" if jpeg else raw_chunk
    if name not in chunks:
        return  # the reader reports the missing chunk
    offset = chunks[name][0]
    with open(path, "rb") as file:
        file.seek(offset)
        header = file.read(25 if jpeg else 22)
    if len(header) < (25 if jpeg else 22):
        return  # the reader reports the short header
    if jpeg:
        (n_bscans,) = struct.unpack_from("<I", header, 17)
        if offset + 25 + 4 * n_bscans > size:
            raise _declared_beyond_file(path, f"{n_bscans} JPEG B-scans", 4 * n_bscans, size - offset - 25)
        return
    width, height, _, n_bscans = struct.unpack_from("<4I", header, 1)
    n_bytes = 2 * width * height * n_bscans
    if offset + 22 + n_bytes > size:
        raise _declared_beyond_file(path, f"{n_bscans} B-scans of {height} x {width} uint16 voxels", n_bytes,
                                    size - offset - 22)


def _read_topcon(path: Path, settings: VendorFileSettings) -> VendorVolume:
    FDS, FDA = _topcon_readers()

    _check_topcon_size(path)
    oct_volume = (FDS if path.suffix.lower() == ".fds" else FDA)(path).read_oct_volume()
    if oct_volume.volume is None:
        raise VendorFileError(f"{path}: no OCT volume in the file (neither @IMG_JPEG nor @IMG_MOT_COMP_03)")
    if oct_volume.pixel_spacing is not None:
        # oct-converter's order: width, distance between B-scans, depth
        width, distance, depth = oct_volume.pixel_spacing
        spacing, source = (width, depth, distance), "the @PARAM_SCAN chunk"
    else:
        spacing = _spacing_setting(path, settings.topcon_spacing_mm, "TOPCON_SPACING_MM", 3,
                                   "its voxel spacing (no @PARAM_SCAN_04/02 chunk)")
        source = "TOPCON_SPACING_MM"
    return VendorVolume(_stack(path, oct_volume.volume), _geometry(path, spacing, source), "Topcon",
                        _laterality(oct_volume.laterality))


def _e2e_entries(path: Path, data: mmap.mmap, skip: int) -> np.ndarray:
    """The ``_E2E_ENTRY`` records of the directories chained from the main directory (each directory's ``prev``
    field names the next; positions count from byte ``skip``), as oct-converter's ``E2E`` follows them.

    Raises:
        VendorFileError: a directory past the end of the file, a chain that cycles (the reader would loop
            forever), or more entries than the file can hold.
    """
    size, tables, seen, n_entries_in_all = len(data), [], set(), 0
    (current,) = struct.unpack_from("<I", data, skip + 36 + 40)  # the main directory's ``current``
    while current != 0:  # each step a new position inside the file: at most one step per byte
        offset = skip + current
        if current in seen or offset + 52 > size:
            problem = "cycles back to" if current in seen else "points past the end of the file, to"
            raise VendorFileError(f"{path}: its chain of directories {problem} byte {offset}; expected a complete "
                                  f".e2e file (a corrupt one)")
        seen.add(current)
        n_entries, current = struct.unpack_from("<I4xI", data, offset + 36)  # num_entries, prev
        if offset + 52 + 44 * n_entries > size:
            raise _declared_beyond_file(path, f"a directory of {n_entries} entries at byte {offset}", 44 * n_entries,
                                        size - offset - 52)
        n_entries_in_all += n_entries
        if 44 * n_entries_in_all > size:  # directories sharing entries: the reader's work would grow as their square
            raise VendorFileError(f"{path}: its directories declare {n_entries_in_all} entries in all, more than its "
                                  f"{size} bytes can hold (44 bytes each); expected a complete .e2e file (a corrupt "
                                  f"one)")
        tables.append(np.frombuffer(data, _E2E_ENTRY, n_entries, offset + 52).copy())
    return np.concatenate(tables) if tables else np.zeros(0, _E2E_ENTRY)


def _check_e2e_slots(path: Path, entries: np.ndarray, size: int) -> None:
    """Checks the B-scan slots oct-converter allocates, per series (patient, study, series ids) its highest slice
    id / 2 + 1, against the file's size: each B-scan needs a chunk header of ``_E2E_CHUNK_HEADER_BYTES``."""
    if not len(entries):
        return
    keys = np.stack([entries["patient"], entries["study"], entries["series"]], axis=1)
    _, series = np.unique(keys, axis=0, return_inverse=True)
    highest = np.full(int(series.max()) + 1, -1, np.int64)
    np.maximum.at(highest, series.ravel(), entries["slice"])
    n_slots = int(np.where(highest > 0, highest // 2 + 1, 0).sum())
    if n_slots * _E2E_CHUNK_HEADER_BYTES > size:
        raise VendorFileError(f"{path}: its directory numbers slices up to {int(highest.max())}, {n_slots} B-scans "
                              f"in all, more than its {size} bytes can hold ({_E2E_CHUNK_HEADER_BYTES} bytes of "
                              f"chunk header each); expected a complete .e2e file (a corrupt one)")


def _check_e2e_chunk(path: Path, data: mmap.mmap, offset: int) -> None:
    """Checks that the chunk at ``offset`` ends inside the file: its body, an image's height x width pixels (uint16
    for OCT, uint8 else) and a contour's width float32 values. A header oct-converter cannot parse (past the end of
    the file, or a magic that is not ASCII) is passed over, as the reader skips it."""
    size = len(data)
    if offset + _E2E_CHUNK_HEADER_BYTES > size or not data[offset:offset + 12].isascii():
        return
    body_bytes, ind, chunk_type = struct.unpack_from("<24xI20xH2xI", data, offset)  # size, ind, type
    body, left = offset + _E2E_CHUNK_HEADER_BYTES, size - offset - _E2E_CHUNK_HEADER_BYTES
    if chunk_type == _E2E_IMAGE and left >= 20:
        height, width = struct.unpack_from("<2I", data, body + 12)
        kind, dtype, pixel_bytes = ("an OCT B-scan", "uint16", 2) if ind == 1 else ("an image", "uint8", 1)
        if pixel_bytes * height * width > left - 20:
            raise _declared_beyond_file(path, f"{kind} of {height} x {width} {dtype} pixels in its chunk at byte "
                                              f"{offset}", pixel_bytes * height * width, left - 20)
    if chunk_type == _E2E_CONTOUR and left >= 16:
        (width,) = struct.unpack_from("<I", data, body + 12)
        if 4 * width > left - 16:
            raise _declared_beyond_file(path, f"{width} float32 contour values in its chunk at byte {offset}",
                                        4 * width, left - 16)
    if body_bytes > left:
        raise _declared_beyond_file(path, f"a chunk body at byte {body}", body_bytes, left)


def _check_e2e_size(path: Path) -> None:
    """Checks a Heidelberg ``.e2e`` against the file's size before oct-converter reads it, walking it as its ``E2E``
    reader does (positions count from byte 64 in an ``E2EMultipleVolumeFile``): the chain of directories
    (:func:`_e2e_entries`), the B-scan slots (:func:`_check_e2e_slots`) and each chunk an entry points to whose
    start lies after the entry's position (:func:`_check_e2e_chunk`). The reader would otherwise allocate whatever
    the headers declare, or loop forever on a directory chain that cycles."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        skip = 64 if file.read(21) == b"E2EMultipleVolumeFile" else 0
        if size < skip + 36 + 52:
            return  # the reader reports the short header
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            entries = _e2e_entries(path, data, skip)
            _check_e2e_slots(path, entries, size)
            for start in np.unique(entries["start"][entries["start"] > entries["pos"]]):
                _check_e2e_chunk(path, data, skip + int(start))


def _read_e2e(path: Path, settings: VendorFileSettings) -> VendorVolume:
    from oct_converter.readers import E2E

    _check_e2e_size(path)
    # oct-converter 0.7.0 reads the depth spacing from the B-scan header; width and B-scan distance are not there
    x_mm, z_mm = _spacing_setting(path, settings.e2e_spacing_xz_mm, "E2E_SPACING_XZ_MM", 2,
                                  "its A-scan spacing and B-scan distance (x, z)")
    volumes = [volume for volume in E2E(path).read_oct_volume() if len(volume.volume) > 1]
    if len(volumes) != 1:
        raise VendorFileError(f"{path}: expected one OCT volume (more than one B-scan) in the file, found "
                              f"{len(volumes)}; export each volume to its own file")
    oct_volume = volumes[0]
    depth_mm = oct_volume.pixel_spacing[1] if oct_volume.pixel_spacing else float("nan")
    return VendorVolume(_stack(path, oct_volume.volume),
                        _geometry(path, (x_mm, depth_mm, z_mm), "the B-scan header and E2E_SPACING_XZ_MM"),
                        "Spectralis", _laterality(oct_volume.laterality))


def _dicom_spacing(path: Path, dataset) -> tuple[float, float, float]:
    """``(x, y, z)`` mm of an OCT DICOM: PixelSpacing (row = depth, column = width) from the shared (else the
    first per-frame) functional groups or the top level; z from the spacing of the frames' ImagePositionPatient,
    else SliceThickness."""
    groups = [group for name in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")
              for group in (dataset.get(name) or [])[:1]]
    measures = [group.PixelMeasuresSequence[0] for group in groups if "PixelMeasuresSequence" in group]
    pixel = next((m.PixelSpacing for m in measures + [dataset] if "PixelSpacing" in m), None)
    thickness = next((m.SliceThickness for m in measures + [dataset] if "SliceThickness" in m), None)
    if pixel is None:
        raise VendorFileError(f"{path}: the DICOM holds no PixelSpacing; expected an OCT (Ophthalmic Tomography) "
                              f"DICOM with its pixel measures")
    positions = [frame.PlanePositionSequence[0].ImagePositionPatient
                 for frame in dataset.get("PerFrameFunctionalGroupsSequence") or []
                 if "PlanePositionSequence" in frame]
    z_mm = float("nan")
    if len(positions) > 1:
        z_mm = float(np.linalg.norm(np.subtract(positions[1], positions[0], dtype=float)))
    if not z_mm > 0 and thickness is not None:
        z_mm = float(thickness)
    return float(pixel[1]), float(pixel[0]), z_mm


def _dicom_declared(dataset) -> tuple[int, str]:
    """Bytes of pixel data a DICOM's Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated declare, and
    those numbers in words; ``(0, "no image")`` without Rows and Columns."""
    if "Rows" not in dataset or "Columns" not in dataset:
        return 0, "no image"
    rows, columns = int(dataset.Rows or 0), int(dataset.Columns or 0)
    frames, samples = int(dataset.get("NumberOfFrames") or 1), int(dataset.get("SamplesPerPixel") or 1)
    bits = int(dataset.get("BitsAllocated") or 8)
    return ((rows * columns * frames * samples * bits + 7) // 8,
            f"{frames} frame(s) of {rows} x {columns} pixels, {samples} sample(s) of {bits} bits")


def _check_dicom_size(path: Path, dataset, syntax) -> None:
    """Checks what a DICOM's image attributes declare (:func:`_dicom_declared`) against the file's size before
    pydicom allocates the frames: uncompressed pixel data must fit in the file; compressed (``syntax`` encapsulated
    or deflated) data may declare at most ``_DICOM_MAX_COMPRESSION_RATIO`` times the file's size, and needs an
    8-byte item header per frame."""
    if "Rows" not in dataset or "Columns" not in dataset:
        return  # no image: the reader reports it
    n_bytes, declared = _dicom_declared(dataset)
    frames, size = int(dataset.get("NumberOfFrames") or 1), path.stat().st_size
    if syntax is not None and (syntax.is_encapsulated or syntax.is_deflated):
        if n_bytes > _DICOM_MAX_COMPRESSION_RATIO * size or 8 * frames > size:
            raise VendorFileError(f"{path}: its header declares {declared} ({n_bytes} bytes), more than its {size} "
                                  f"bytes of compressed data can hold; expected a complete .dcm file (a corrupt one)")
    elif n_bytes > size:
        raise _declared_beyond_file(path, declared, n_bytes, size)


def _inflated_pieces(file: BinaryIO) -> Iterator[bytes]:
    """The raw deflate stream from ``file``'s position on, inflated in pieces of at most ``_INFLATE_PIECE_BYTES``
    (a truncated stream ends where its data does). Raises zlib.error for other data."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    while not inflater.eof and (data := inflater.unconsumed_tail or file.read(_INFLATE_PIECE_BYTES)):
        yield inflater.decompress(data, _INFLATE_PIECE_BYTES)
    if not inflater.eof:
        yield inflater.flush(_INFLATE_PIECE_BYTES)


def _check_dicom_deflate(path: Path) -> None:
    """For the deflated transfer syntax, which pydicom inflates whole even to read the header: reads the image
    attributes from the first ``_DICOM_HEADER_BYTES`` inflated bytes, checks them (:func:`_check_dicom_size`), and
    inflates the rest in pieces, counting, to refuse a data set larger than the pixel data they declare plus
    ``_DICOM_HEADER_BYTES``. Other transfer syntaxes are left to the reader.

    Raises:
        VendorFileError: the data set inflates beyond that bound, or declares more than its compressed bytes hold.
    """
    from pydicom.filereader import read_dataset, read_preamble

    def past_file_meta(tag, vr, length) -> bool:
        return tag >> 16 != 2

    def past_image_attributes(tag, vr, length) -> bool:
        return tag > 0x0028FFFF

    with open(path, "rb") as file:
        read_preamble(file, False)
        syntax = read_dataset(file, False, True, stop_when=past_file_meta).get("TransferSyntaxUID")
        if syntax is None or not syntax.is_deflated:
            return
        pieces, head = _inflated_pieces(file), bytearray()
        for piece in pieces:
            head += piece
            if len(head) >= _DICOM_HEADER_BYTES:
                break
        with warnings.catch_warnings():  # pydicom warns where the head ends inside an element
            warnings.simplefilter("ignore")
            dataset = read_dataset(io.BytesIO(bytes(head)), False, True, stop_when=past_image_attributes)
        _check_dicom_size(path, dataset, syntax)
        n_bytes, declared = _dicom_declared(dataset)
        limit, n_inflated = n_bytes + _DICOM_HEADER_BYTES, len(head)
        del head
        for piece in pieces:
            n_inflated += len(piece)
            if n_inflated > limit:
                raise VendorFileError(f"{path}: its deflated data set inflates to more than {limit} bytes, but its "
                                      f"header declares {declared} ({n_bytes} bytes) and at most "
                                      f"{_DICOM_HEADER_BYTES} bytes of other attributes are expected; expected a "
                                      f"complete .dcm file (a corrupt one)")


def _read_dicom(path: Path, settings: VendorFileSettings) -> VendorVolume:
    import pydicom
    from oct_converter.readers import Dicom

    _check_dicom_deflate(path)
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    _check_dicom_size(path, dataset, getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None))
    vendor = _dicom_vendor(path, str(dataset.get("Manufacturer", "")), settings.vendors)
    spacing = _dicom_spacing(path, dataset)
    array = np.asarray(Dicom(path).read_oct_volume().volume)
    array = array[np.newaxis] if array.ndim == 2 else array
    if array.ndim != 3:
        raise VendorFileError(f"{path}: expected grey B-scans (frames, rows, columns), got pixel data of shape "
                              f"{array.shape}")
    laterality = _laterality(dataset.get("Laterality", "") or dataset.get("ImageLaterality", ""))
    return VendorVolume(array, _geometry(path, spacing, "the DICOM pixel measures"), vendor,
                        laterality)


_READERS: dict[str, Callable[[Path, VendorFileSettings], VendorVolume]] = {
    ".vol": _read_vol, ".xml": _read_heyex_xml, ".img": _read_img, ".fds": _read_topcon, ".fda": _read_topcon,
    ".e2e": _read_e2e, ".dcm": _read_dicom, ".dicom": _read_dicom}


def read_vendor_volume(path: str | Path, settings: VendorFileSettings) -> VendorVolume:
    """Reads a vendor file (a suffix of ``VENDOR_SUFFIXES``) as the module table says.

    Args:
        path: the file.
        settings: the spacing and shape the files do not hold, and the vendors accepted
            (:class:`VendorFileSettings`).

    Returns:
        The volume: ``(z, y, x)`` uint8 (or uint16 beyond 0..255), its geometry, vendor and laterality.

    Raises:
        VendorFileError: a missing, truncated or corrupt file, one its reader refuses, a spacing neither the file
            nor the settings give, or a vendor not in ``settings.vendors``; one line naming the file.
    """
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise VendorFileError(f"{path}: not a vendor file; expected one of {', '.join(VENDOR_SUFFIXES)}")
    if not path.is_file():
        raise VendorFileError(f"{path}: no such file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # oct-converter prints notes on stdout
            result = reader(path, settings)
    except VendorFileError:
        raise
    except Exception as error:  # noqa: BLE001 - third-party parsers of untrusted bytes raise anything
        text = " ".join(str(error).split())[:200] or "no detail"
        raise VendorFileError(f"{path}: not a readable {path.suffix.lower()} file ({type(error).__name__}: "
                              f"{text})") from None
    if result.vendor not in settings.vendors:
        raise VendorFileError(f"{path}: a {result.vendor} file, but VENDORS is {tuple(settings.vendors)}")
    if min(result.array.shape) < 1:
        raise VendorFileError(f"{path}: the volume is empty (shape {result.array.shape})")
    return dataclasses.replace(result, array=np.ascontiguousarray(_intensities(path, result.array)))


def read_oct_volume(path: str | Path, settings: VendorFileSettings) -> tuple[np.ndarray, Geometry, str]:
    """An OCT volume from a vendor file (:func:`read_vendor_volume` with ``settings``) or a MetaImage/NIfTI file
    (:func:`utils.io.mhd_io.read_volume`; ``settings`` unused), as ``(array (z, y, x), geometry, laterality)``; the
    laterality is ``"R"``, ``"L"``, or ``""`` when unknown (always for MetaImage/NIfTI, whose headers do not hold it).

    Raises:
        VolumeError: the file cannot be used; one line naming it.
    """
    if is_vendor_file(path):
        volume = read_vendor_volume(path, settings)
        return volume.array, volume.geometry, volume.laterality
    return (*read_volume(path), "")
