"""Reading and writing volumes with their geometry: ITK MetaImage (``.mhd`` header + ``.raw`` data, the RETOUCH
format), and the single-file ``.mha`` (MetaImage) and ``.nii.gz`` (NIfTI) that ``predict.py --format`` can write.
All three go through SimpleITK, which keeps spacing, origin and direction (NIfTI stores spacing as float32, so a
spacing comes back within about 1e-7 of what was written, and in RAS, which SimpleITK converts to and from ITK's LPS).

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


def _data_file(path: Path) -> str | None:
    """The header's ``ElementDataFile`` value (SimpleITK reads it but does not report it), None if absent."""
    for line in path.read_text(encoding="latin-1").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ElementDataFile":
            return value.strip()
    return None


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
        VolumeError: missing or unreadable header, not 3-D, or a missing data file; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such header file")
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        data_file = _data_file(path) if volume_format(path) == "mhd" else "LOCAL"
    except (RuntimeError, OSError) as error:
        kind = "a MetaImage header" if volume_format(path) == "mhd" else "a volume"
        raise VolumeError(f"{path}: not {kind} that SimpleITK can read ({_reason(error, path)})") from None
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
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent) as tmp_dir:
        tmp_path = Path(tmp_dir) / path.name
        sitk.WriteImage(image, str(tmp_path), useCompression=fmt == "nii.gz")
        for tmp_file, final in reversed(list(zip(volume_files(tmp_path), volume_files(path)))):
            os.replace(tmp_file, final)  # the .raw first


def remove_volume(path: str | Path) -> None:
    """Deletes a volume's files (:func:`volume_files`), those that exist; the header first."""
    for file in volume_files(path):
        Path(file).unlink(missing_ok=True)
