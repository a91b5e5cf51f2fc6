"""Label names and colours for viewers: an ITK-SNAP label description file and a 3D Slicer colour table.

Both name the background and each fluid of ``FLUIDS`` by its label code, in the overlay colours of
:data:`utils.predict.overlays.FLUID_COLOURS` (the one place colours are defined), so a segmentation opened over its
OCT shows IRF, SRF and PED as the overlay PNGs and the report draw them.

- ITK-SNAP: *Segmentation > Import Label Descriptions...* reads the text file (``IDX R G B A VIS MSH "LABEL"``,
  colour 0-255, opacity ``A`` 0-1, as ITK-SNAP's own *Export Label Descriptions* writes it).
- 3D Slicer: the ``.ctbl`` colour table (``code name R G B A``, all 0-255) loads with *Add Data*; choose it as the
  label map's colour node (``slicer.util.loadColorTable`` in Python).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from utils.io.files import atomic_write_text
from utils.predict.overlays import FLUID_COLOURS

BACKGROUND_NAME = "Background"


def _labels(fluids: Mapping[str, int], background: int, colours: Mapping[str, tuple[int, int, int]]
            ) -> list[tuple[int, str, tuple[int, int, int]]]:
    """``(code, name, rgb)`` of the background and every fluid, by code; a fluid without a colour is refused."""
    missing = [name for name in fluids if name not in colours]
    if missing:
        raise ValueError(f"no colour for fluid(s) {', '.join(missing)}; add them to FLUID_COLOURS")
    rows = [(int(background), BACKGROUND_NAME, (0, 0, 0))]
    rows += [(int(code), name, tuple(int(c) for c in colours[name])) for name, code in fluids.items()]
    return sorted(rows)


def itksnap_label_description(fluids: Mapping[str, int], background: int = 0,
                              colours: Mapping[str, tuple[int, int, int]] = FLUID_COLOURS) -> str:
    """The text of an ITK-SNAP label description file.

    Args:
        fluids: fluid name -> label code (``FLUIDS``).
        background: the background code (``BACKGROUND``): transparent and hidden, as ITK-SNAP's "Clear Label".
        colours: fluid name -> RGB 0-255.

    Returns:
        One header comment block, then one line per label: ``IDX R G B A VIS MSH "LABEL"``.

    Raises:
        ValueError: a fluid without a colour.
    """
    lines = ["################################################",
             "# ITK-SnAP Label Description File (retouch predict.py)",
             "# File format:",
             "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
             "# IDX: label code; R, G, B: colour 0..255; A: opacity 0..1; VIS, MSH: visible, mesh (0 or 1)",
             "################################################"]
    for code, name, (r, g, b) in _labels(fluids, background, colours):
        shown = int(code != background)
        lines.append(f"{code:5d} {r:5d} {g:4d} {b:4d} {float(shown):8.2f} {shown:2d} {shown:2d}    \"{name}\"")
    return "\n".join(lines) + "\n"


def slicer_colour_table(fluids: Mapping[str, int], background: int = 0,
                        colours: Mapping[str, tuple[int, int, int]] = FLUID_COLOURS) -> str:
    """The text of a 3D Slicer colour table (``.ctbl``).

    Args:
        fluids, background, colours: as :func:`itksnap_label_description`.

    Returns:
        Comment lines, then one line per label: ``code name R G B A`` (0-255; the background fully transparent).
    """
    rows = _labels(fluids, background, colours)
    lines = ["# Color table file (retouch predict.py): label code, name, R G B A (0-255)",
             f"# {len(rows)} values"]
    for code, name, (r, g, b) in rows:
        lines.append(f"{code} {name} {r} {g} {b} {0 if code == background else 255}")
    return "\n".join(lines) + "\n"


def write_label_tables(out_dir: str | Path, fluids: Mapping[str, int], background: int, itksnap_file: str,
                       slicer_file: str) -> list[Path]:
    """Writes the ITK-SNAP label description ``itksnap_file`` (``ITKSNAP_LABELS_FILE``) and the 3D Slicer colour
    table ``slicer_file`` (``SLICER_COLOURS_FILE``) of ``fluids`` and ``background`` (as
    :func:`itksnap_label_description`) into ``out_dir`` (atomically) and returns their paths."""
    out_dir = Path(out_dir)
    paths = [out_dir / itksnap_file, out_dir / slicer_file]
    atomic_write_text(paths[0], itksnap_label_description(fluids, background))
    atomic_write_text(paths[1], slicer_colour_table(fluids, background))
    return paths
