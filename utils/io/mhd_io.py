"""Reading and writing ITK MetaImage volumes (``.mhd`` header + ``.raw`` data) with their geometry.

Arrays are ``(z, y, x)`` = (B-scan, depth, width). SimpleITK, and so :class:`Geometry`, orders spacing and origin
``(x, y, z)``: ``spacing_mm[1]`` is the axial (depth) spacing, ``spacing_mm[2]`` the distance between B-scans.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk


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


def _data_file(path: Path) -> str | None:
    """The header's ``ElementDataFile`` value (SimpleITK reads it but does not report it), None if absent."""
    for line in path.read_text(encoding="latin-1").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ElementDataFile":
            return value.strip()
    return None


def read_volume_info(path: str | Path) -> VolumeInfo:
    """The size, voxel type and geometry of a 3-D MetaImage volume, from its header (SimpleITK's
    ``ImageFileReader.ReadImageInformation``), with its data file checked to exist.

    Raises:
        VolumeError: missing or unreadable header, not 3-D, or a missing data file; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such header file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        data_file = _data_file(path)
    except (RuntimeError, OSError) as error:
        raise VolumeError(f"{path}: not a MetaImage header that SimpleITK can read "
                          f"({_reason(error, path)})") from None
    if reader.GetDimension() != 3:
        raise VolumeError(f"{path}: expected a 3-D volume, the header says NDims = {reader.GetDimension()}")
    if data_file is None or (data_file != "LOCAL" and not (path.parent / data_file).is_file()):
        raise VolumeError(f"{path}: its data file {data_file} is missing (expected beside the header)")
    dtype = sitk.GetArrayViewFromImage(sitk.Image([1, 1, 1], reader.GetPixelID())).dtype
    geometry = Geometry(spacing_mm=tuple(float(v) for v in reader.GetSpacing()),
                        origin_mm=tuple(float(v) for v in reader.GetOrigin()),
                        direction=tuple(float(v) for v in reader.GetDirection()))
    return VolumeInfo(tuple(int(v) for v in reader.GetSize())[::-1], dtype, geometry)


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
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent) as tmp_dir:
        tmp_header = Path(tmp_dir) / path.name
        sitk.WriteImage(image, str(tmp_header), useCompression=False)
        os.replace(tmp_header.with_suffix(".raw"), path.with_suffix(".raw"))
        os.replace(tmp_header, path)
