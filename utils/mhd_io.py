"""Reading and writing ITK MetaImage volumes (``.mhd`` header + ``.raw`` data) with their geometry.

Arrays are ``(z, y, x)`` = (B-scan, depth, width). SimpleITK, and so :class:`Geometry`, orders spacing and origin
``(x, y, z)``: ``spacing_mm[1]`` is the axial (depth) spacing, ``spacing_mm[2]`` the distance between B-scans.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from utils.files import atomic_path


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


def read_header(path: str | Path) -> dict[str, str]:
    """The ``key = value`` lines of a MetaImage header, checked for the keys and data file a volume needs.

    Raises:
        VolumeError: missing or unreadable header, no ``DimSize``/``ElementType``, or a missing data file.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as error:
        raise VolumeError(f"{path}: cannot read the header ({error.strerror})") from None
    header = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            header[key.strip()] = value.strip()
    for key in ("NDims", "DimSize", "ElementType", "ElementDataFile"):
        if key not in header:
            raise VolumeError(f"{path}: not a MetaImage header (no {key} line)")
    data_file = header["ElementDataFile"]
    if data_file != "LOCAL" and not (path.parent / data_file).is_file():
        raise VolumeError(f"{path}: its data file {data_file} is missing (expected beside the header)")
    return header


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
    header = read_header(path)
    if header["NDims"] != "3":
        raise VolumeError(f"{path}: expected a 3-D volume, the header says NDims = {header['NDims']}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown error"
        raise VolumeError(f"{path}: SimpleITK cannot read it ({reason})") from None
    geometry = Geometry(spacing_mm=tuple(float(s) for s in image.GetSpacing()),
                        origin_mm=tuple(float(o) for o in image.GetOrigin()),
                        direction=tuple(float(d) for d in image.GetDirection()))
    return sitk.GetArrayFromImage(image), geometry


def write_volume(path: str | Path, array: np.ndarray, geometry: Geometry, compress: bool = False) -> None:
    """Writes a ``(z, y, x)`` array as ``path`` (``.mhd``) + its ``.raw`` with the given geometry, atomically.

    The ``.raw`` is renamed into place before the header, so a header on disk always has its complete data file.
    """
    path = Path(path)
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a (z, y, x) array, got shape {array.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_mm)
    image.SetDirection(geometry.direction)
    raw_path = path.with_suffix(".zraw" if compress else ".raw")
    with atomic_path(path) as tmp_header:
        sitk.WriteImage(image, str(tmp_header), useCompression=compress)
        tmp_raw = tmp_header.with_suffix(raw_path.suffix)
        # The header names its data file after the temporary name: point it at the final one.
        text = tmp_header.read_text(encoding="latin-1")
        tmp_header.write_text(text.replace(f"ElementDataFile = {tmp_raw.name}",
                                           f"ElementDataFile = {raw_path.name}"), encoding="latin-1")
        tmp_raw.replace(raw_path)
