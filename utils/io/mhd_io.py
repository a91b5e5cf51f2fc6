"""Reading and writing volumes with their geometry: ITK MetaImage (``.mhd`` header + ``.raw`` data, the RETOUCH
format), and the single-file ``.mha`` (MetaImage) and ``.nii.gz`` (NIfTI) that ``predict.py --format`` can write.
All three go through SimpleITK, which keeps spacing, origin and direction (NIfTI stores spacing as float32, so a
spacing comes back within about 1e-7 of what was written, and in RAS, which SimpleITK converts to and from ITK's LPS).

Arrays are ``(z, y, x)`` = (B-scan, depth, width). SimpleITK, and so :class:`Geometry`, orders spacing and origin
``(x, y, z)``: ``spacing_mm[1]`` is the axial (depth) spacing, ``spacing_mm[2]`` the distance between B-scans.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from utils.io.files import temporary_prefix


VOLUME_FORMATS = ("mhd", "mha", "nii.gz")  # what write_volume writes; predict.py --format chooses one


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


def _header_fields(path: Path) -> dict[str, str]:
    """The ``key = value`` fields of a MetaImage header, up to ``ElementDataFile`` (the last field; with
    ``LOCAL`` the voxel data follows it in the same file)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as file:
        for raw_line in file:
            key, sep, value = raw_line.decode("latin-1").partition("=")
            if sep:
                fields[key.strip()] = value.strip()
                if key.strip() == "ElementDataFile":
                    break
    return fields


def _check_data_file(path: Path, fields: dict[str, str], n_bytes: int) -> None:
    """Checks the header's ``ElementDataFile``: a file in the header's own folder (or below it), complete, and
    really zlib data when ``CompressedData = True`` (SimpleITK gives an all-zero or garbage volume otherwise).

    Raises:
        VolumeError: naming the header, what is wrong and what was expected.
    """
    data_file = fields.get("ElementDataFile")
    if data_file is None:
        raise VolumeError(f"{path}: the header has no ElementDataFile line; expected e.g. "
                          f"ElementDataFile = {path.stem}.raw")
    if data_file == "LOCAL":
        return
    relative = Path(data_file)
    if (data_file.split()[0] == "LIST" or "%" in data_file or relative.is_absolute() or ".." in relative.parts
            or data_file.replace("\\", "/").startswith("/")):
        raise VolumeError(f"{path}: ElementDataFile = {data_file} points outside the header's folder (or is a "
                          f"file list); expected a data file beside the header, e.g. {path.stem}.raw")
    data_path = path.parent / relative
    if not data_path.is_file():
        raise VolumeError(f"{path}: its data file {data_file} is missing (expected beside the header)")
    size = data_path.stat().st_size
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if compressed:
        decompressor, total = zlib.decompressobj(), 0
        try:
            with open(data_path, "rb") as file:
                for chunk in iter(lambda: file.read(1 << 22), b""):
                    total += len(decompressor.decompress(chunk))
            total += len(decompressor.flush())
        except zlib.error:
            raise VolumeError(f"{path}: CompressedData = True, but its data file {data_file} is not zlib data; "
                              f"expected compressed voxels (or CompressedData = False for raw bytes)") from None
        if total != n_bytes:
            raise VolumeError(f"{path}: its compressed data file {data_file} holds {total} bytes of voxels; the "
                              f"header's DimSize and ElementType need {n_bytes}")
        return
    header_size = int(float(fields.get("HeaderSize", "0") or 0))
    expected = n_bytes + max(header_size, 0)
    if size < expected or (header_size == 0 and size != expected):
        raise VolumeError(f"{path}: its data file {data_file} holds {size} bytes; the header's DimSize and "
                          f"ElementType need {expected} (a truncated or foreign file)")


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
    ``ImageFileReader.ReadImageInformation``), with an ``.mhd`` header's data file checked to exist.

    Raises:
        VolumeError: missing or unreadable header, not 3-D, no voxels, spacing that is not positive and finite,
            or a data file that is missing, outside the header's folder, truncated, or not compressed as the
            header says; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such header file")
    metaimage = volume_format(path) == "mhd"  # the header's own fields are checked for MetaImage files only
    try:
        fields = _header_fields(path) if metaimage else {}
    except OSError as error:
        raise VolumeError(f"{path}: cannot read the header ({error.strerror or error})") from None
    if fields.get("NDims", "3").strip() != "3":
        raise VolumeError(f"{path}: expected a 3-D volume, the header says NDims = {fields['NDims']}")
    if "DimSize" in fields:
        _check_geometry(path, fields)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except (RuntimeError, OSError) as error:
        kind = "a MetaImage header" if volume_format(path) == "mhd" else "a volume"
        raise VolumeError(f"{path}: not {kind} that SimpleITK can read ({_reason(error, path)})") from None
    if reader.GetDimension() != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, the header says NDims = {reader.GetDimension()}")
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype
    shape = tuple(int(v) for v in reader.GetSize())[::-1]
    components = reader.GetNumberOfComponents()
    if metaimage:
        _check_data_file(path, fields, int(np.prod(shape)) * dtype.itemsize * components)
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
        sitk.WriteImage(image, str(tmp_path), useCompression=fmt == "nii.gz")
        for tmp_file, final in reversed(list(zip(volume_files(tmp_path), volume_files(path)))):
            os.replace(tmp_file, final)  # the .raw first


def remove_volume(path: str | Path) -> None:
    """Deletes a volume's files (:func:`volume_files`), those that exist; the header first."""
    for file in volume_files(path):
        Path(file).unlink(missing_ok=True)


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
