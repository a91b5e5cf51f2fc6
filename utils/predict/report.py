"""A per-case report (``report.png``) and an index of them (``report.html``) that opens from disk, no server.

``report.png`` shows, for one segmented volume:

- en-face thickness maps of each fluid: fluid height per A-scan in µm (voxels of that fluid in the A-scan x the
  axial spacing), over the B-scan width (x, mm) by B-scan position (mm), B-scan 0 at the top, with a colour bar
  and the ETDRS grid (utils/predict/etdrs.py) centred on the case's fovea;
- each fluid's volume per B-scan (mm³);
- the B-scans with the most fluid, fluids coloured over the preprocessed B-scan (as the ``--overlays`` PNGs);
- the case's volumes, presence scores and how the fovea was found.

Colours come from :data:`utils.predict.overlays.FLUID_COLOURS`. Figures are drawn with matplotlib's Agg canvas
(no display, no pyplot state). ``report.html`` is plain HTML (no scripts, no external files besides the PNGs,
linked by relative paths), one table row and one image per case.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from utils.io.files import atomic_path, atomic_write_text
from utils.io.mhd_io import Geometry
from utils.io.tables import presence_column, volume_column
from utils.predict import etdrs
from utils.predict.overlays import FLUID_COLOURS, overlay_bscan

REPORT_BSCANS = 3  # B-scans with the most fluid drawn in a report
REPORT_DPI = 100


def thickness_maps_um(labels: np.ndarray, geometry: Geometry, fluids: Mapping[str, int]) -> dict[str, np.ndarray]:
    """Each fluid's height per A-scan.

    Args:
        labels: ``(z, y, x)`` label codes.
        geometry: spacing ``(x, y, z)`` in mm; the axial (y) spacing gives the height of a voxel.
        fluids: fluid name -> label code.

    Returns:
        fluid -> ``(z, x)`` float32 thickness in µm (voxels of the fluid in the A-scan x axial spacing x 1000).
    """
    return {name: (np.count_nonzero(labels == code, axis=1) * geometry.axial_spacing_mm * 1000).astype(np.float32)
            for name, code in fluids.items()}


def volume_per_bscan_mm3(labels: np.ndarray, geometry: Geometry, fluids: Mapping[str, int]) -> dict[str, np.ndarray]:
    """fluid -> ``(z,)`` float64 volume of the fluid in each B-scan, mm³ (voxel count x voxel volume)."""
    return {name: np.count_nonzero(labels == code, axis=(1, 2)) * geometry.voxel_volume_mm3
            for name, code in fluids.items()}


def bscans_with_most_fluid(labels: np.ndarray, fluids: Mapping[str, int], count: int) -> list[int]:
    """Indices of up to ``count`` B-scans holding the most fluid voxels (any fluid), most first; ties by index.

    Without any fluid in the volume: the middle B-scan alone, so a report always shows one.
    """
    totals = np.count_nonzero(np.isin(labels, list(fluids.values())), axis=(1, 2))
    order = [int(z) for z in np.argsort(-totals, kind="stable") if totals[z] > 0][:count]
    return order or [labels.shape[0] // 2]


def _draw_grid(axes, fovea_x_mm: float, fovea_z_mm: float, diameters_mm: Sequence[float], laterality: str) -> None:
    """The ETDRS circles and quadrant borders around the fovea; ``N`` and ``T`` beside the outer circle on the
    nasal and temporal sides when the laterality (``R``/``L``) is known."""
    for diameter in diameters_mm:
        axes.add_patch(Circle((fovea_x_mm, fovea_z_mm), diameter / 2, fill=False, color="white", lw=0.8))
    inner, outer = diameters_mm[0] / 2, diameters_mm[2] / 2
    for angle in (45, 135, 225, 315):  # quadrant borders: the diagonals between the central disc and the outer circle
        dx, dz = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        axes.plot([fovea_x_mm + inner * dx, fovea_x_mm + outer * dx],
                  [fovea_z_mm + inner * dz, fovea_z_mm + outer * dz], color="white", lw=0.8)
    axes.plot([fovea_x_mm], [fovea_z_mm], marker="+", color="white", ms=8)
    for name, side in etdrs.side_names(laterality).items():
        axes.text(fovea_x_mm + (1 if side == "right" else -1) * outer * 1.1, fovea_z_mm, name[0].upper(),
                  color="white", ha="center", va="center", fontsize=10, fontweight="bold")


def draw_report(path: str | Path, case_name: str, volume: np.ndarray, labels: np.ndarray, geometry: Geometry,
                row: Mapping, fluids: Mapping[str, int], diameters_mm: Sequence[float]) -> None:
    """Draws one case's ``report.png`` (module docstring) and writes it atomically.

    Args:
        path: the PNG to write.
        case_name: the title.
        volume: ``(z, y, x)`` preprocessed uint8 volume (the grey of the B-scans).
        labels: ``(z, y, x)`` label codes, the same shape.
        geometry: their geometry (spacing ``(x, y, z)`` mm).
        row: the case's ``volumes.csv`` row (volumes, presence, fovea columns).
        fluids: fluid name -> label code (``FLUIDS``).
        diameters_mm: the ETDRS grid's three circles (``ETDRS_DIAMETERS_MM``).

    Raises:
        ValueError: ``volume`` and ``labels`` of different shapes.
    """
    if volume.shape != labels.shape or labels.ndim != 3:
        raise ValueError(f"{path}: volume {volume.shape} and labels {labels.shape} must be the same (z, y, x) shape")
    fluids = dict(fluids)
    n_bscans, height, width = labels.shape
    x_mm, depth_mm, z_mm = geometry.spacing_mm
    laterality = row.get("laterality") if isinstance(row.get("laterality"), str) else ""
    extent = (-x_mm / 2, (width - 0.5) * x_mm, (n_bscans - 0.5) * z_mm, -z_mm / 2)  # pixel centres at i x spacing
    chosen = bscans_with_most_fluid(labels, fluids, REPORT_BSCANS)
    columns = max(len(fluids), len(chosen), 2)
    figure = Figure(figsize=(5 * columns, 13), dpi=REPORT_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(3, columns, height_ratios=(1.2, 0.8, 1.0))
    figure.suptitle(f"{case_name} ({row.get('vendor', '')}): {n_bscans} B-scans of {width} x {height}, "
                    f"spacing x {x_mm:.4g}, depth {depth_mm:.4g}, B-scans {z_mm:.4g} mm", fontsize=12)

    for index, (name, thickness) in enumerate(thickness_maps_um(labels, geometry, fluids).items()):
        axes = figure.add_subplot(grid[0, index])
        image = axes.imshow(thickness, extent=extent, cmap="magma", vmin=0, vmax=max(float(thickness.max()), 1.0),
                            interpolation="nearest", aspect="equal")
        figure.colorbar(image, ax=axes, label=f"{name} thickness (µm)", shrink=0.8)
        _draw_grid(axes, float(row["fovea_column"]) * x_mm, float(row["fovea_bscan"]) * z_mm,
                   diameters_mm, laterality)
        axes.set_xlim(extent[0], extent[1])
        axes.set_ylim(extent[2], extent[3])
        axes.set_title(f"{name}: {row[volume_column(name)]:.3f} mm³")
        axes.set_xlabel("x along the B-scan (mm)")
        axes.set_ylabel("B-scan position (mm, B-scan 0 at the top)")

    per_bscan_mm3 = volume_per_bscan_mm3(labels, geometry, fluids)
    axes = figure.add_subplot(grid[1, :columns - 1])
    for name, per_bscan in per_bscan_mm3.items():
        axes.plot(np.arange(n_bscans), per_bscan, label=name, color=np.asarray(FLUID_COLOURS[name]) / 255)
    axes.set_xlabel("B-scan")
    axes.set_ylabel("fluid volume per B-scan (mm³)")
    axes.legend()
    axes.grid(alpha=0.3)

    axes = figure.add_subplot(grid[1, columns - 1])
    axes.axis("off")
    lines = [f"{'fluid':<5} {'volume mm³':>11} {'presence':>9}"]
    lines += [f"{name:<5} {row[volume_column(name)]:>11.4f} {row[presence_column(name)]:>9.3f}" for name in fluids]
    lines += ["", f"fovea: B-scan {float(row['fovea_bscan']):g}, column {float(row['fovea_column']):g}",
              f"  found by {row['fovea_found_by']}",
              f"ETDRS grid scanned: {100 * float(row['etdrs_scanned_fraction']):.0f}%",
              f"eye: {dict(R='right (OD)', L='left (OS)').get(laterality, 'unknown: quadrants by image side')}"]
    axes.text(0, 1, "\n".join(lines), family="monospace", va="top", fontsize=11)

    for index, z in enumerate(chosen):
        axes = figure.add_subplot(grid[2, index])
        axes.imshow(overlay_bscan(volume[z], labels[z], fluids), aspect="auto", interpolation="nearest",
                    extent=(-x_mm / 2, (width - 0.5) * x_mm, (height - 0.5) * depth_mm, -depth_mm / 2))
        fluid_mm3 = sum(float(per[z]) for per in per_bscan_mm3.values())
        axes.set_title(f"B-scan {z}: {fluid_mm3:.4f} mm³ of fluid")
        axes.set_xlabel("x (mm)")
        axes.set_ylabel("depth (mm)")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def report_index_html(table: pd.DataFrame, report_png: str, fluids: Sequence[str], title: str) -> str:
    """The text of ``report.html``: one summary table of the cases, then each case's report image.

    Args:
        table: ``volumes.csv`` rows (``case``, ``vendor``, ``<fluid>_volume_mm3``, ``<fluid>_presence``,
            ``fovea_found_by``).
        report_png: the report's file name inside each case folder (``REPORT_PNG``).
        fluids: fluid names.
        title: the page title.

    Returns:
        An HTML5 document; links and images are relative (``<case>/report.png``, URL-quoted), text is escaped.
    """
    def cell(value) -> str:
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return f"<td>{html.escape(text)}</td>"

    head = ["case", "vendor"] + [f"{f} mm³" for f in fluids] + [f"{f} presence" for f in fluids] + ["fovea"]
    rows, sections = [], []
    for record in table.to_dict("records"):
        case = str(record["case"])
        link = f"{quote(case)}/{quote(report_png)}"
        anchor = html.escape(f"case-{case}", quote=True)
        values = ([f'<td><a href="#{anchor}">{html.escape(case)}</a></td>', cell(record["vendor"])]
                  + [cell(float(record[volume_column(f)])) for f in fluids]
                  + [cell(float(record[presence_column(f)])) for f in fluids]
                  + [cell(record.get("fovea_found_by", ""))])
        rows.append("<tr>" + "".join(values) + "</tr>")
        sections.append(f'<section id="{anchor}">\n<h2>{html.escape(case)}</h2>\n'
                        f'<a href="{html.escape(link, quote=True)}"><img src="{html.escape(link, quote=True)}" '
                        f'alt="report of {html.escape(case, quote=True)}" style="max-width: 100%"></a>\n</section>')
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        "<style>body { font-family: sans-serif; } table { border-collapse: collapse; } "
        "td, th { border: 1px solid #999; padding: 2px 6px; text-align: right; }</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        "<table>",
        "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead>",
        "<tbody>", *rows, "</tbody>",
        "</table>",
        *sections,
        "</body>",
        "</html>",
    ]) + "\n"


def write_report_index(out_dir: str | Path, table: pd.DataFrame, fluids: Sequence[str], report_png: str,
                       report_html: str) -> Path | None:
    """Writes ``out_dir/<report_html>`` (``REPORT_HTML``) for the rows of ``table`` whose
    ``out_dir/<case>/<report_png>`` (``REPORT_PNG``) exists, with the volume columns of ``fluids``; returns its path,
    or None (nothing written) when no case has a report."""
    out_dir = Path(out_dir)
    with_report = table[[(out_dir / str(case) / report_png).is_file() for case in table["case"]]]
    if with_report.empty:
        return None
    path = out_dir / report_html
    atomic_write_text(path, report_index_html(with_report, report_png, list(fluids),
                                              f"Fluid segmentation: {len(with_report)} case(s) in {out_dir.name}"))
    return path
