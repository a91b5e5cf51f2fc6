"""Reading and writing ITK MetaImage volumes (``.mhd`` header + ``.raw`` data) with their geometry.

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


def read_volume_info(path: str | Path) -> VolumeInfo:
    """The size, voxel type and geometry of a 3-D MetaImage volume, from its header (SimpleITK's
    ``ImageFileReader.ReadImageInformation``), with its data file checked.

    Raises:
        VolumeError: missing or unreadable header, not 3-D, no voxels, spacing that is not positive and finite,
            or a data file that is missing, outside the header's folder, truncated, or not compressed as the
            header says; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such header file")
    try:
        fields = _header_fields(path)
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
        raise VolumeError(f"{path}: not a MetaImage header that SimpleITK can read "
                          f"({_reason(error, path)})") from None
    if reader.GetDimension() != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, the header says NDims = {reader.GetDimension()}")
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype
    shape = tuple(int(v) for v in reader.GetSize())[::-1]
    components = reader.GetNumberOfComponents()
    _check_data_file(path, fields, int(np.prod(shape)) * dtype.itemsize * components)
    geometry = Geometry(spacing_mm=tuple(float(v) for v in reader.GetSpacing()),
                        origin_mm=tuple(float(v) for v in reader.GetOrigin()),
                        direction=tuple(float(v) for v in reader.GetDirection()))
    return VolumeInfo(shape, dtype, geometry)


def read_volume(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Reads a 3-D MetaImage volume.

    Args:
        path: the ``.mhd`` header; its ``.raw`` must lie where the header says.

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
    """Writes a ``(z, y, x)`` array as ``path`` (``.mhd``) + its ``.raw`` with the given geometry, atomically.

    SimpleITK writes the pair under their final names into a temporary folder beside ``path``; the ``.raw`` is
    then renamed into place before the header, so a header on disk always has its complete data file.
    """
    path = Path(path)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a (z, y, x) array, got shape {array.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_mm)
    image.SetDirection(geometry.direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=temporary_prefix(path), suffix=".tmp", dir=path.parent) as tmp_dir:
        tmp_header = Path(tmp_dir) / path.name
        sitk.WriteImage(image, str(tmp_header), useCompression=False)
        os.replace(tmp_header.with_suffix(".raw"), path.with_suffix(".raw"))
        os.replace(tmp_header, path)


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
