"""Small valid vendor files built with the readers' own layouts (tests/io/test_vendor_files.py, tests/test_predict.py).

Cirrus .img (raw bytes), Heidelberg .vol (eyepy's ``vol_format``), Topcon .fds/.fda (oct-converter's chunk structs),
OCT DICOM (oct-converter's ``write_opt_dicom``).
"""

from __future__ import annotations

import datetime
import struct
from pathlib import Path

import numpy as np


def write_img(path: Path, volume: np.ndarray) -> Path:
    """Cirrus .img: uint8, each B-scan A-scan after A-scan (depth fastest), as oct-converter's IMG reads it."""
    path.write_bytes(np.ascontiguousarray(volume.transpose(0, 2, 1)).tobytes())
    return path


def write_vol(path: Path, volume: np.ndarray, spacing_mm: tuple[float, float, float], eye: str = "OD") -> Path:
    """Heidelberg .vol through eyepy's own ``vol_format`` (the published header layout, documented in its code)."""
    import construct as cs
    from eyepy.core.utils import to_vol_intensity
    from eyepy.io.he.vol_reader import vol_format

    n_bscans, size_y, size_x = volume.shape
    when = datetime.datetime(2020, 1, 2).isoformat()  # eyepy encodes its dates from ISO text
    bscans = [dict(bscan_hdr_size=256 + 17 * 4 * size_x, start_x=0.0, start_y=z * spacing_mm[2], end_x=1.0,
                   end_y=z * spacing_mm[2], num_seg=17, quality=30.0, shift=0, iv_transformation=[0.0] * 6,
                   layer_segmentations=np.zeros((17, size_x), np.float32),
                   data=to_vol_intensity(volume[z]).astype(np.float32))
              for z in range(n_bscans)]
    # eyepy 0.21.0's IntDate encodes a float into the 64-bit integer exam_time field (its writer fails on it), so
    # this field is built as the plain integer the format holds: 100 ns units since 1601-01-01
    layout = cs.Struct(*[cs.Renamed(cs.Int64ul, newname="exam_time") if field.name == "exam_time" else field
                         for field in vol_format.subcons])
    exam_time = int((datetime.datetime(2020, 1, 2) - datetime.datetime(1601, 1, 1)).total_seconds()) * 10**7
    data = layout.build(dict(
        size_x=size_x, n_bscans=n_bscans, size_y=size_y, scale_x=spacing_mm[0], distance=spacing_mm[2],
        scale_y=spacing_mm[1], size_x_slo=8, size_y_slo=8, scale_x_slo=0.01, scale_y_slo=0.01,
        scan_position=eye, exam_time=exam_time, scan_pattern=3, id="1", reference_id="", dob=when, visit_date=when,
        grid_type=0, grid_offset=0, grid_type1=0, grid_offset1=0, prog_id="", localizer=np.zeros((8, 8), np.uint8),
        bscans=bscans))
    path.write_bytes(data)
    return path


def write_topcon(path: Path, volume: np.ndarray, x_mm: float, y_mm: float, z_um: float, eye: int = 1) -> Path:
    """Topcon .fds (@IMG_SCAN_03) or .fda (@IMG_MOT_COMP_03) with the chunk structs oct-converter parses:
    uint16 B-scans, @PARAM_SCAN_04 (scan width and height in mm, depth resolution in um), @CAPTURE_INFO_02."""
    fda = path.suffix == ".fda"
    if fda:
        from oct_converter.readers.binary_structs import fda_binary as binary
    else:
        from oct_converter.readers.binary_structs import fds_binary as binary
    n, height, width = volume.shape
    scan = dict(scan_mode=2, width=width, height=height, bits_per_pixel=16, number_slices=n, format=0, size=0)
    header = (binary.oct_header_2.build({**scan, "fast_q": 0.0}) if fda else binary.oct_header.build(scan))
    chunks = {
        b"@IMG_MOT_COMP_03" if fda else b"@IMG_SCAN_03": header + volume.astype("<u2").tobytes(),
        b"@PARAM_SCAN_04": binary.param_scan_04_header.build(dict(
            fixation=0, mirror_pos=0, polar=0, x_dimension_mm=x_mm, y_dimension_mm=y_mm, z_resolution_um=z_um,
            comp_eff_2=0.0, comp_eff_3=0.0, base_pos=0, used_calib_data=0)),
        b"@CAPTURE_INFO_02": binary.capture_info_02_header.build(dict(
            eye=eye, scan_mode=2, session_id=1, label="", cap_date=[2020, 1, 2, 10, 0, 0])),
    }
    data = binary.header.build(dict(file_code="FOCT", file_type="FDA", major_ver=1, minor_ver=0))
    for name, body in chunks.items():
        data += struct.pack("<B", len(name)) + name + struct.pack("<I", len(body)) + body
    path.write_bytes(data + b"\x00")
    return path


def write_dicom(path: Path, volume: np.ndarray, spacing_mm: tuple[float, float, float],
                manufacturer: str = "Topcon") -> Path:
    """OCT DICOM through oct-converter's writer (which rescales intensities to 0..100 and writes uint16)."""
    from oct_converter.dicom.dicom import write_opt_dicom
    from oct_converter.dicom.metadata import (DicomMetadata, ImageGeometry, ManufacturerMeta, OCTImageParams,
                                              PatientMeta, SeriesMeta)

    meta = DicomMetadata(
        PatientMeta(), SeriesMeta(series_id="1", laterality="L"), ManufacturerMeta(manufacturer=manufacturer),
        ImageGeometry(pixel_spacing=[spacing_mm[1], spacing_mm[0]], slice_thickness=spacing_mm[2],
                      image_orientation=[1, 0, 0, 0, 1, 0]),
        OCTImageParams())
    write_opt_dicom(meta, list(volume), path)
    return path


def write_heyex_xml(folder: Path, volume: np.ndarray, spacing_mm: tuple[float, float, float], eye: str = "R",
                    name: str = "export", vertical: bool = False) -> Path:
    """A Heidelberg Heyex XML export: ``folder/<name>.xml`` naming a localizer image and one 8-bit PNG per B-scan
    beside it, in the element layout eyepy's ``HeXmlReader`` reads (its ``xml_format``: ``HEDX/BODY/Patient/Study/
    Series/Image``, ``ExamURL`` as a Windows path). B-scan z runs left to right at y = z x spacing_mm[2] mm on the
    localizer, or with ``vertical`` top to bottom at x = z x spacing_mm[2] mm."""
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    n_bscans, size_y, size_x = volume.shape
    date = "<Date><Year>2020</Year><Month>1</Month><Day>2</Day></Date>"

    def image(kind: str, file_name: str, width: int, height: int, scale_x: float, scale_y: float,
              start_y: float = 0.0) -> str:
        start, end = ((start_y, 0.0), (start_y, size_x * spacing_mm[0])) if vertical else \
            ((0.0, start_y), (size_x * spacing_mm[0], start_y))
        position = (f"<Start><Coord><X>{start[0]}</X><Y>{start[1]}</Y></Coord></Start>"
                    f"<End><Coord><X>{end[0]}</X><Y>{end[1]}</Y></Coord></End>"
                    "<ImageQuality>30.0</ImageQuality>") if kind == "OCT" else "<Angle>30</Angle><Focus>0.0</Focus>"
        return (f"<Image><ImageType><Type>{kind}</Type></ImageType><OphthalmicAcquisitionContext>"
                f"<Width>{width}</Width><Height>{height}</Height><ScaleX>{scale_x}</ScaleX><ScaleY>{scale_y}</ScaleY>"
                f"{position}</OphthalmicAcquisitionContext>"
                f"<ImageData><ExamURL>C:\\HEYEX\\export\\{file_name}</ExamURL></ImageData></Image>")

    iio.imwrite(folder / f"{name}_localizer.png", np.zeros((64, 64), np.uint8))
    images = [image("LOCALIZER", f"{name}_localizer.png", 64, 64, 0.1, 0.1)]
    for z in range(n_bscans):
        iio.imwrite(folder / f"{name}_{z:03d}.png", np.ascontiguousarray(volume[z], np.uint8))
        images.append(image("OCT", f"{name}_{z:03d}.png", size_x, size_y, spacing_mm[0], spacing_mm[1],
                            z * spacing_mm[2]))
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n<HEDX><BODY><SWVersion><Version>6.0</Version></SWVersion>'
           f"<Patient><ID>1</ID><PatientID>P1</PatientID><LastName>Test</LastName><FirstNames>A</FirstNames>"
           f"<Birthdate>{date}</Birthdate><Study><StudyDate>{date}</StudyDate><Series><ID>1</ID>"
           f"<Laterality>{eye}</Laterality><ReferenceSeries><ID>1</ID><ExamDate>{date}</ExamDate></ReferenceSeries>"
           f"<ThicknessGrid><Type>0</Type></ThicknessGrid><ProgID>1</ProgID>{''.join(images)}</Series></Study>"
           "</Patient></BODY></HEDX>\n")
    path = folder / f"{name}.xml"
    path.write_text(xml, encoding="utf-8")
    return path
