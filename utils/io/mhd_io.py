"""Reading and writing volumes with their geometry: ITK MetaImage (``.mhd`` header + ``.raw`` data, the RETOUCH
format), and the single-file ``.mha`` (MetaImage) and ``.nii.gz`` (NIfTI) that ``predict.py --format`` can write.
All three go through SimpleITK, which keeps spacing, origin and direction (NIfTI stores spacing as float32, so a
spacing comes back within about 1e-7 of what was written, and in RAS, which SimpleITK converts to and from ITK's LPS).

Arrays are ``(z, y, x)`` = (B-scan, depth, width). SimpleITK, and so :class:`Geometry`, orders spacing and origin
``(x, y, z)``: ``spacing_mm[1]`` is the axial (depth) spacing, ``spacing_mm[2]`` the distance between B-scans.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import math
import os
import re
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from utils.io.files import temporary_prefix


VOLUME_FORMATS = ("mhd", "mha", "nii.gz")  # what write_volume writes; predict.py --format chooses one
# The checks below read and inflate a volume's data in pieces of at most this many bytes, so that a file declaring
# (or inflating to) terabytes is refused with little memory.
_CHUNK_BYTES = 1 << 22
# Deflate (zlib, gzip) turns one stored byte into at most 1032 (a 258-byte match coded in 2 bits; zlib's technical
# notes): compressed data declaring more voxels than this cannot hold them.
_DEFLATE_MAX_RATIO = 1032
_MAX_DIM_SIZE = 2**31 - 1  # MetaIO keeps DimSize in an int: SimpleITK reads a larger one as 2**31
_SCALAR_PIXEL_IDS = {sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
                     sitk.sitkUInt64, sitk.sitkInt64, sitk.sitkFloat32, sitk.sitkFloat64}


class VolumeError(ValueError):
    """A volume file that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where a volume's voxels lie in space, as SimpleITK gives it.

    Attributes:
        spacing_mm: voxel size ``(x, y, z)`` in mm.
        origin_mm: position of voxel ``(0, 0, 0)``, ``(x, y, z)`` in mm.
        direction: 3x3 direction cosines, row-major, 9 floats.
    """

    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel in mm³."""
        return float(np.prod(self.spacing_mm))

    @property
    def axial_spacing_mm(self) -> float:
        """Depth (y) spacing of a B-scan row in mm."""
        return float(self.spacing_mm[1])


@dataclasses.dataclass(frozen=True)
class VolumeInfo:
    """What a MetaImage header says about its volume, read without the voxel data.

    Attributes:
        shape: ``(z, y, x)`` voxels.
        dtype: the numpy dtype the voxels are read as.
        geometry: spacing, origin and direction.
    """

    shape: tuple[int, ...]
    dtype: np.dtype
    geometry: Geometry


def _reason(error: Exception, path: Path) -> str:
    """The last line of a SimpleITK/OS error, without the file name the message already starts with."""
    text = str(error).strip()
    line = text.splitlines()[-1] if text else "unknown error"
    return line.replace(f'"{path}"', "the file").replace(str(path), "the file").removeprefix("sitk::ERROR: ")


def _header_fields(path: Path) -> tuple[dict[str, str], int]:
    """The ``key = value`` fields of a MetaImage header, up to ``ElementDataFile`` (the last field), and the
    header's length in bytes: with ``ElementDataFile = LOCAL`` the voxel data follows it in the same file."""
    fields: dict[str, str] = {}
    length = 0
    with open(path, "rb") as file:
        for raw_line in file:
            length += len(raw_line)
            key, sep, value = raw_line.decode("latin-1").partition("=")
            if sep:
                fields[key.strip()] = value.strip()
                if key.strip() == "ElementDataFile":
                    break
    return fields, length


def _header_size(path: Path, fields: dict[str, str]) -> int:
    """The header's ``HeaderSize``: bytes to skip at the start of the data file (with ``LOCAL``: of the ``.mhd``
    itself), or -1 for data at the end of the file; 0 when absent."""
    text = fields.get("HeaderSize", "0") or "0"
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value.is_integer() and value >= -1):
        raise VolumeError(f"{path}: HeaderSize = {text}; expected the number of bytes before the voxel data (>= 0), "
                          f"or -1 for data at the end of the file")
    return int(value)


def _inflated_size(file, n_stored: int, limit: int) -> int:
    """Bytes the zlib stream in the next ``n_stored`` bytes of ``file`` inflates to, counted in pieces of at most
    ``_CHUNK_BYTES`` (memory stays small) and no further than ``limit + 1`` (a bomb ends as soon as it overflows).

    Raises:
        zlib.error: not zlib data.
    """
    decompressor, total = zlib.decompressobj(), 0
    while n_stored > 0 and total <= limit and not decompressor.eof:
        data = file.read(min(_CHUNK_BYTES, n_stored))
        if not data:
            break
        n_stored -= len(data)
        while data and total <= limit:
            total += len(decompressor.decompress(data, _CHUNK_BYTES))
            data = decompressor.unconsumed_tail
    if total <= limit and not decompressor.eof:
        total += len(decompressor.flush(_CHUNK_BYTES))  # what a truncated stream still yields: a few bytes
    return total


def _check_compressed(path: Path, fields: dict[str, str], data_path: Path, source: str, start: int, local: bool,
                      n_bytes: int) -> None:
    """Checks that the zlib stream of ``data_path`` inflates to exactly ``n_bytes``, where MetaIO reads it: the
    ``CompressedDataSize`` bytes from ``start`` (the ``HeaderSize``, or the end of the header with ``LOCAL``), else
    the whole file. A declared size the stream cannot hold is refused without inflating anything.

    Raises:
        VolumeError: naming the header, what is wrong and what was expected.
    """
    stated = fields.get("CompressedDataSize", "0") or "0"
    if not stated.isdigit():
        raise VolumeError(f"{path}: CompressedDataSize = {stated}; expected the number of compressed bytes")
    if int(stated) == 0 and local:
        raise VolumeError(f"{path}: CompressedData = True and ElementDataFile = LOCAL, but no CompressedDataSize; "
                          f"expected CompressedDataSize = <bytes of compressed data> (without it SimpleITK inflates "
                          f"from the start of the header)")
    if int(stated) == 0:
        start = 0  # MetaIO inflates the whole file then, whatever HeaderSize says
    n_stored = int(stated) or data_path.stat().st_size
    if start + n_stored > data_path.stat().st_size:
        raise VolumeError(f"{path}: CompressedDataSize = {stated}, but {source} holds "
                          f"{data_path.stat().st_size - start} bytes (a truncated file)")
    if n_bytes > _DEFLATE_MAX_RATIO * n_stored:
        raise VolumeError(f"{path}: the header's DimSize and ElementType need {n_bytes} bytes, more than {source} "
                          f"can hold ({n_stored} compressed bytes; zlib inflates at most {_DEFLATE_MAX_RATIO}-fold); "
                          f"expected a DimSize that matches the data")
    try:
        with open(data_path, "rb") as file:
            file.seek(start)
            total = _inflated_size(file, n_stored, n_bytes)
    except zlib.error:
        raise VolumeError(f"{path}: CompressedData = True, but {source} is not zlib data; expected compressed "
                          f"voxels (or CompressedData = False for raw bytes)") from None
    if total != n_bytes:
        holds = f"more than {n_bytes}" if total > n_bytes else f"{total}"
        raise VolumeError(f"{path}: {source} inflates to {holds} bytes of voxels; the header's DimSize and "
                          f"ElementType need {n_bytes}")


def _check_data_file(path: Path, fields: dict[str, str], header_length: int, n_bytes: int) -> None:
    """Checks the header's ``ElementDataFile``: a file in the header's own folder (or below it), or ``LOCAL`` (the
    data follows the header's ``header_length`` bytes), holding the ``n_bytes`` the header declares, before anything
    is allocated for them: raw bytes from ``HeaderSize`` on (exactly to the end with ``HeaderSize = 0``; the last
    ``n_bytes`` with -1), or, with ``CompressedData = True``, zlib data that inflates to exactly ``n_bytes``
    (SimpleITK gives an all-zero or garbage volume otherwise).

    Raises:
        VolumeError: naming the header, what is wrong and what was expected.
    """
    data_file = fields.get("ElementDataFile")
    if not data_file:
        raise VolumeError(f"{path}: the header has no ElementDataFile line; expected e.g. "
                          f"ElementDataFile = {path.stem}.raw")
    local = data_file.upper() == "LOCAL"
    if local:
        data_path, source = path, "the data after its header (ElementDataFile = LOCAL)"
    else:
        relative = Path(data_file)
        if (data_file.split()[0] == "LIST" or "%" in data_file or relative.is_absolute() or ".." in relative.parts
                or data_file.replace("\\", "/").startswith("/")):
            raise VolumeError(f"{path}: ElementDataFile = {data_file} points outside the header's folder (or is a "
                              f"file list); expected a data file beside the header, e.g. {path.stem}.raw")
        data_path, source = path.parent / relative, f"its data file {data_file}"
        if not data_path.is_file():
            raise VolumeError(f"{path}: its data file {data_file} is missing (expected beside the header)")
    header_size = _header_size(path, fields)
    if local and 0 < header_size < header_length:
        raise VolumeError(f"{path}: HeaderSize = {header_size} puts the voxel data inside the {header_length}-byte "
                          f"header; expected 0 (data right after the header) or at least {header_length}")
    start = header_size if header_size > 0 else header_length if local else 0  # MetaIO: HeaderSize from byte 0
    if fields.get("CompressedData", "False").lower() == "true":
        _check_compressed(path, fields, data_path, source, start, local, n_bytes)
        return
    available = data_path.stat().st_size - start
    if available < n_bytes or (header_size == 0 and available != n_bytes):
        if local:
            raise VolumeError(f"{path}: {source} holds {available} bytes; the header's DimSize and ElementType "
                              f"need {n_bytes} (a truncated or foreign file)")
        raise VolumeError(f"{path}: its data file {data_file} holds {start + available} bytes; the header's DimSize "
                          f"and ElementType need {start + n_bytes} (a truncated or foreign file)")


def _nifti_layout(header: bytes) -> tuple[list[int], int, int] | None:
    """``(dims, bits per voxel, byte offset of the voxels)`` from a NIfTI-1 or NIfTI-2 header in either byte order;
    None when ``header`` is not one that states them sensibly (SimpleITK then says what is wrong)."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack_from(order + "i", header)[0] == 348:
            dims, bits = struct.unpack_from(order + "8h", header, 40), struct.unpack_from(order + "h", header, 72)[0]
            offset = struct.unpack_from(order + "f", header, 108)[0]
        elif len(header) >= 540 and struct.unpack_from(order + "i", header)[0] == 540:
            dims, bits = struct.unpack_from(order + "8q", header, 16), struct.unpack_from(order + "h", header, 14)[0]
            offset = struct.unpack_from(order + "q", header, 168)[0]
        else:
            continue
        n_dims = dims[0]
        if 1 <= n_dims <= 7 and min(dims[1:n_dims + 1]) >= 1 and bits >= 1 and math.isfinite(offset) and offset >= 0:
            return list(dims[1:n_dims + 1]), bits, int(offset)
        return None
    return None


def _check_nifti_data(path: Path) -> None:
    """Checks that a ``.nii`` / ``.nii.gz`` file holds the voxels its header declares, before SimpleITK allocates
    them (it reads a short file as a volume padded with zeros): bytes after ``vox_offset``, or for gzip the inflated
    stream, counted in bounded pieces.

    Raises:
        VolumeError: naming the file, what it declares and what it holds.
    """
    compressed = path.name.lower().endswith(".gz")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as file:
            layout = _nifti_layout(file.read(540))
    except (OSError, EOFError, zlib.error):
        return  # not gzip or not NIfTI: SimpleITK's reader says why
    if layout is None:
        return
    dims, bits, offset = layout
    n_bytes, shown = (math.prod(dims) * bits + 7) // 8, " x ".join(str(size) for size in dims)
    needed = offset + n_bytes
    if compressed and needed > _DEFLATE_MAX_RATIO * path.stat().st_size:
        raise VolumeError(f"{path}: its header declares {shown} voxels of {bits} bits ({n_bytes} bytes), more than "
                          f"its {path.stat().st_size} gzip bytes can hold (gzip inflates at most "
                          f"{_DEFLATE_MAX_RATIO}-fold); expected dimensions that match the data")
    try:
        with opener(path, "rb") as file:
            total = 0
            while total < needed and (data := file.read(min(_CHUNK_BYTES, needed - total))):
                total += len(data)
    except (OSError, EOFError, zlib.error) as error:
        raise VolumeError(f"{path}: its gzip data is corrupt ({error}); expected a complete .nii.gz file") from None
    if total < needed:
        raise VolumeError(f"{path}: its header declares {shown} voxels of {bits} bits ({n_bytes} bytes from byte "
                          f"{offset}), but the file holds {max(total - offset, 0)} (a truncated file)")


def _check_pixel_type(path: Path, fields: dict[str, str], reader: sitk.ImageFileReader | None = None) -> None:
    """One grey value (or label) per voxel: ``ElementNumberOfChannels = 1`` in a MetaImage header (checked before
    SimpleITK, which calls 0 or -1 channels an unknown pixel type), and, given the ``reader`` after
    ``ReadImageInformation``, a scalar pixel type (not a vector, complex or RGB type).

    Raises:
        VolumeError: naming the file, its channels or pixel type, and what was expected.
    """
    channels = fields.get("ElementNumberOfChannels", "1")
    if channels != "1":
        raise VolumeError(f"{path}: ElementNumberOfChannels = {channels}; expected 1 (one grey value per voxel)")
    if reader is not None and (reader.GetPixelID() not in _SCALAR_PIXEL_IDS or reader.GetNumberOfComponents() != 1):
        raise VolumeError(f"{path}: its voxels are {sitk.GetPixelIDValueAsString(reader.GetPixelID())} "
                          f"({reader.GetNumberOfComponents()} channel(s)); expected one channel: a single grey "
                          f"value (or label) per voxel, as MET_UCHAR, MET_USHORT or another scalar type")


def _check_geometry(path: Path, fields: dict[str, str]) -> None:
    """Spacing and size the header states: 3 positive finite spacings, at least one voxel along each axis."""
    spacing_text = fields.get("ElementSpacing", fields.get("ElementSize", "1 1 1"))
    try:
        spacing = [float(value) for value in spacing_text.split()]
    except ValueError:
        spacing = []
    if len(spacing) != 3 or not all(math.isfinite(value) and value > 0 for value in spacing):
        raise VolumeError(f"{path}: ElementSpacing = {spacing_text}; expected 3 positive finite numbers (mm)")
    size_text = fields.get("DimSize", "")
    try:
        size = [int(value) for value in size_text.split()]
    except ValueError:
        size = []
    if len(size) != 3 or min(size) < 1:
        raise VolumeError(f"{path}: DimSize = {size_text}; expected 3 sizes >= 1 (x, y, z): a volume with at "
                          f"least one B-scan")
    if max(size) > _MAX_DIM_SIZE:
        raise VolumeError(f"{path}: DimSize = {size_text}; expected sizes up to {_MAX_DIM_SIZE} (what MetaImage "
                          f"holds)")


def volume_format(path: str | Path) -> str | None:
    """The format of ``VOLUME_FORMATS`` that a file name ends with (case-insensitive), else None."""
    name = Path(path).name.lower()
    return next((fmt for fmt in sorted(VOLUME_FORMATS, key=len, reverse=True) if name.endswith(f".{fmt}")), None)


def with_format(file_name: str, fmt: str) -> str:
    """``file_name`` with its volume suffix replaced by ``fmt``: ``("segmentation.mhd", "nii.gz")`` ->
    ``"segmentation.nii.gz"``; a name without a volume suffix gets ``.fmt`` appended.

    Raises:
        ValueError: ``fmt`` is not one of ``VOLUME_FORMATS``.
    """
    if fmt not in VOLUME_FORMATS:
        raise ValueError(f"volume format must be one of {', '.join(VOLUME_FORMATS)}, got {fmt!r}")
    current = volume_format(file_name)
    stem = file_name[:-len(current) - 1] if current else file_name
    return f"{stem}.{fmt}"


def volume_files(path: str | Path) -> list[Path]:
    """The files a volume occupies: an ``.mhd`` header and its ``.raw``, or the one file of other formats."""
    path = Path(path)
    return [path, path.with_suffix(".raw")] if volume_format(path) == "mhd" else [path]


def find_volume(folder: str | Path, file_name: str) -> Path | None:
    """The volume ``folder/file_name`` in whichever of ``VOLUME_FORMATS`` it was written (same name, any volume
    suffix): ``file_name`` itself when it exists, else the first format of ``VOLUME_FORMATS`` that does; None when
    there is none. So ``segmentation.mhd`` finds a ``segmentation.nii.gz`` written by ``predict.py --format nii.gz``.
    """
    folder = Path(folder)
    for name in dict.fromkeys([file_name] + [with_format(file_name, fmt) for fmt in VOLUME_FORMATS]):
        if (folder / name).is_file():
            return folder / name
    return None


def read_volume_info(path: str | Path) -> VolumeInfo:
    """The size, voxel type and geometry of a 3-D volume, from its header (SimpleITK's
    ``ImageFileReader.ReadImageInformation``), with the voxel data the header declares checked to be in the file
    (the data file of an ``.mhd``, the data after the header of ``ElementDataFile = LOCAL``, the stream of
    ``CompressedData = True`` or of a ``.nii.gz``) before anything is allocated for it.

    Raises:
        VolumeError: missing or unreadable header, not 3-D, no voxels, spacing that is not positive and finite,
            more than one channel or a non-scalar voxel type, or a data file that is missing, outside the header's
            folder, holds fewer or more bytes than the header declares, or is not compressed as the header says;
            the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such header file")
    metaimage = volume_format(path) in ("mhd", "mha")  # the header's own fields are checked for MetaImage only
    try:
        fields, header_length = _header_fields(path) if metaimage else ({}, 0)
    except OSError as error:
        raise VolumeError(f"{path}: cannot read the header ({error.strerror or error})") from None
    if fields.get("NDims", "3").strip() != "3":
        raise VolumeError(f"{path}: expected a 3-D volume, the header says NDims = {fields['NDims']}")
    if "DimSize" in fields:
        _check_geometry(path, fields)
    if metaimage:
        _header_size(path, fields)  # reported as written, before SimpleITK trips over it
    _check_pixel_type(path, fields)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_data(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except (RuntimeError, OSError) as error:
        kind = "a MetaImage header" if metaimage else "a volume"
        raise VolumeError(f"{path}: not {kind} that SimpleITK can read ({_reason(error, path)})") from None
    if reader.GetDimension() != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, the header says NDims = {reader.GetDimension()}")
    _check_pixel_type(path, fields, reader)
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype
    shape = tuple(int(v) for v in reader.GetSize())[::-1]
    if metaimage:
        _check_data_file(path, fields, header_length, math.prod(shape) * dtype.itemsize)  # Python ints: no overflow
    geometry = Geometry(spacing_mm=tuple(float(v) for v in reader.GetSpacing()),
                        origin_mm=tuple(float(v) for v in reader.GetOrigin()),
                        direction=tuple(float(v) for v in reader.GetDirection()))
    return VolumeInfo(shape, dtype, geometry)


def read_volume(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Reads a 3-D volume (``.mhd``, or any file SimpleITK reads, e.g. ``.mha``, ``.nii.gz``).

    Args:
        path: the volume file; an ``.mhd`` header's ``.raw`` must lie where the header says.

    Returns:
        ``(array, geometry)``: ``array`` is ``(z, y, x)`` in the file's dtype (uint8 for Cirrus/Topcon OCT and for
        label volumes, uint16 for Spectralis OCT); ``geometry`` its spacing, origin and direction.

    Raises:
        VolumeError: unreadable or truncated file, or not 3-D.
    """
    path = Path(path)
    read_volume_info(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise VolumeError(f"{path}: SimpleITK cannot read it ({_reason(error, path)})") from None
    geometry = Geometry(spacing_mm=tuple(float(s) for s in image.GetSpacing()),
                        origin_mm=tuple(float(o) for o in image.GetOrigin()),
                        direction=tuple(float(d) for d in image.GetDirection()))
    return sitk.GetArrayFromImage(image), geometry


def _itk_error_reason(message: str) -> str:
    """The reason in SimpleITK's many-line error (``Reason: No space left on device``), else its last line
    without the ``ITK ERROR: MetaImageIO(0x...):`` prefix."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Reason:"):
            return line.removeprefix("Reason:").strip()
    return re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\):\s*", "", lines[-1]) if lines else "the writer failed"


def write_volume(path: str | Path, array: np.ndarray, geometry: Geometry) -> None:
    """Writes a ``(z, y, x)`` array with the given geometry, atomically, in the format its name ends with.

    Args:
        path: ``*.mhd`` (header + ``.raw`` beside it, uncompressed), ``*.mha`` or ``*.nii.gz`` (``VOLUME_FORMATS``).
        array: ``(z, y, x)`` = (B-scan, depth, width), any dtype SimpleITK takes (not float16).
        geometry: spacing and origin ``(x, y, z)`` in mm, direction cosines.

    SimpleITK writes the file(s) under their final names into a temporary folder beside ``path``; they are then
    renamed into place, an ``.mhd``'s ``.raw`` before its header, so a file on disk under its final name is always
    complete.

    Raises:
        ValueError: not a 3-D array, or a name without a suffix of ``VOLUME_FORMATS``.
        OSError: SimpleITK could not write the file (a full disk); nothing is left under the final name.
    """
    path = Path(path)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a (z, y, x) array, got shape {array.shape}")
    fmt = volume_format(path)
    if fmt is None:
        raise ValueError(f"{path}: a volume file name must end with one of "
                         f"{', '.join('.' + f for f in VOLUME_FORMATS)}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_mm)
    image.SetDirection(geometry.direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent) as tmp_dir:
        tmp_path = Path(tmp_dir) / path.name
        try:
            sitk.WriteImage(image, str(tmp_path), useCompression=fmt == "nii.gz")
        except RuntimeError as error:  # SimpleITK's many-line message: a full disk, a vanished folder
            reason = _itk_error_reason(str(error))
            raise OSError(errno.EIO, f"cannot write this volume ({reason}); is the disk full?", str(path)) from None
        for tmp_file, final in reversed(list(zip(volume_files(tmp_path), volume_files(path)))):
            os.replace(tmp_file, final)  # the .raw first


def remove_volume(path: str | Path) -> None:
    """Deletes a volume's files (:func:`volume_files`), those that exist; the header first."""
    for file in volume_files(path):
        Path(file).unlink(missing_ok=True)


def check_array_volume(array: np.ndarray, geometry: Geometry | None, vendor: str | None, call: str) -> None:
    """Raises ValueError unless an OCT volume given as an array comes with what a file would hold: its geometry
    (three positive finite spacings) and its vendor, and has the ``(z, y, x)`` shape of one; ``call`` names the
    function for the message (e.g. ``"segment"``)."""
    if geometry is None or vendor is None:
        raise ValueError(f"an array needs its geometry and vendor: {call}(array, Geometry(spacing_mm=(x, y, z)), "
                         f"vendor='Spectralis'); a file holds both")
    if array.ndim != 3 or min(array.shape) < 1:
        raise ValueError(f"array of shape {array.shape}: expected (z, y, x) = (B-scans, depth, width), at least one "
                         f"voxel along each")
    spacing = tuple(geometry.spacing_mm)
    if len(spacing) != 3 or not all(math.isfinite(value) and value > 0 for value in spacing):
        raise ValueError(f"geometry.spacing_mm={spacing}: expected 3 positive finite numbers (x, y, z) in mm")


def check_labels(labels: np.ndarray, allowed_codes: Sequence[int], name: str | Path) -> None:
    """Checks that a label volume is an integer array holding only ``allowed_codes``.

    Args:
        labels: label volume, any shape.
        allowed_codes: the background code and the fluid codes.
        name: the file, for the message.

    Raises:
        VolumeError: a non-integer dtype or other values, naming ``name`` and the values found.
    """
    if not np.issubdtype(labels.dtype, np.integer):
        raise VolumeError(f"{name}: expected an integer label volume, got dtype {labels.dtype}")
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if high - low < len(allowed_codes) and set(range(low, high + 1)) <= set(allowed_codes):
        return  # every value in [min, max] is allowed: a quick pass over a whole RETOUCH volume
    unexpected = np.isin(labels, np.asarray(allowed_codes), invert=True)
    if unexpected.any():
        values = np.unique(labels[unexpected])
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        raise VolumeError(f"{name}: unexpected label values {shown}; expected only {sorted(allowed_codes)} "
                          f"(background and the codes of config.FLUIDS)")
