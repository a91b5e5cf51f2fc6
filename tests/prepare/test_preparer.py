"""utils/prepare/preparer.py: the Python API prepares a volume as prepare_data.py does, and its example runs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import config
import prepare_data
from utils.configuration import ConfigError
from utils.io import layout
from utils.io.files import atomic_write_csv, atomic_write_png, read_png
from utils.io.mhd_io import Geometry, VolumeError, read_volume
from utils.io.tables import read_slice_index
from utils.prepare import preparer as preparer_module
from utils.prepare.preparer import Preparer
from volume_factory import write_case
from docs_examples import docstring_example, readme_example

# case -> (vendor, fluid code of its reference's block, or None for a case without reference.mhd)
CASES = {"TRAIN001": ("Cirrus", 1), "TRAIN002": ("Spectralis", 2), "TRAIN003": ("Topcon", 3),
         "TEST001": ("Cirrus", None)}
FLUID_NAMES = {code: fluid for fluid, code in config.FLUIDS.items()}
# disks that fit the tiny B-scans (48 x 32): with the default closing disk(55) every ROI would be the whole B-scan
SETTINGS = {"ENTROPY_DISK_RADIUS": 2, "CLOSING_DISK_RADIUS": 3}
OTHER_SETTINGS = {**SETTINGS, "MEDIAN_INPLANE": 5, "ENTROPY_THRESHOLD": 0.2, "HISTOGRAM_ROUNDING": "round"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("preparer") / "data"
    rng = np.random.default_rng(11)
    for name, (vendor, code) in CASES.items():
        write_case(root / f"RETOUCH-TrainingSet-{vendor}" / name, vendor, rng, code, with_reference=code is not None)
    return root


def prepared_by_script(data: Path, work: Path, *sets: str) -> Path:
    arguments = [option for item in sets for option in ("--set", item)]
    assert prepare_data.main(["--data-root", str(data), "--work-dir", str(work), "--workers", "1", *arguments,
                              "preprocess", "roi"]) == 0
    return work


@pytest.fixture(scope="module")
def work(data, tmp_path_factory) -> Path:
    return prepared_by_script(data, tmp_path_factory.mktemp("work") / "work",
                              *(f"{name}={value}" for name, value in SETTINGS.items()))


@pytest.fixture(scope="module")
def preparer(work) -> Preparer:
    return Preparer(histogram_reference=work / config.HISTOGRAM_REFERENCE_JSON, **SETTINGS)


def oct_path(data: Path, name: str) -> Path:
    return data / f"RETOUCH-TrainingSet-{CASES[name][0]}" / name / "oct.mhd"


def assert_written_by_script(result, work: Path, tmp_path: Path) -> None:
    """``result``'s slices and rows are the files prepare_data.py wrote for its case, PNG for PNG and byte for
    byte (written again by the script's own writers)."""
    folder = layout.SliceLayout().case_dir(work, result.name)
    rows = read_slice_index(folder / layout.CASE_SLICES_CSV, config.FLUIDS)
    pd.testing.assert_frame_equal(result.slice_index, rows)
    atomic_write_csv(tmp_path / "slices.csv", result.slice_index)
    assert (tmp_path / "slices.csv").read_bytes() == (folder / layout.CASE_SLICES_CSV).read_bytes()
    written = 0
    for file_name, image, labels, roi in result.slices():
        for subfolder, array in ((config.SLICE_IMAGE_FOLDER, image), (config.SLICE_MASK_FOLDER, labels),
                                 (config.SLICE_ROI_FOLDER, roi)):
            path = folder / subfolder / file_name
            if array is None:
                assert not path.exists()
                continue
            assert array.dtype == np.uint8 and np.array_equal(array, read_png(path)), path
            atomic_write_png(tmp_path / "slice.png", array, config.PNG_COMPRESS_LEVEL)
            assert (tmp_path / "slice.png").read_bytes() == path.read_bytes(), path
            written += 1
    assert written == len(list(folder.glob("*/*.png")))  # every PNG of the case compared


def test_files_prepare_to_what_prepare_data_writes(data, work, preparer, tmp_path):
    assert preparer.reference["counts"] == json.loads((work / config.HISTOGRAM_REFERENCE_JSON).read_text())["counts"]
    for name, (vendor, code) in CASES.items():
        result = preparer.prepare(oct_path(data, name))
        assert (result.name, result.vendor) == (name, vendor)
        assert result.geometry == read_volume(oct_path(data, name))[1]
        assert result.image.dtype == np.uint8 and result.image.shape == result.roi.shape
        assert result.roi.dtype == bool and 0 < result.roi.mean() < 1  # a band of retina, not all or nothing
        if code is None:
            assert result.labels is None and result.slice_index["is_IRF"].isna().all()
        else:
            assert set(np.unique(result.labels)) == {0, code}
            assert result.slice_index[f"is_{FLUID_NAMES[code]}"].sum() == 2  # the block spans 2 B-scans
        assert_written_by_script(result, work, tmp_path)
    # the index prepare_data.py wrote over all cases is the API's rows, case by case
    index = read_slice_index(work / config.SLICE_INDEX_CSV, config.FLUIDS)
    rows = pd.concat([preparer.prepare(oct_path(data, name), with_roi=False).slice_index
                      for name in index["case"].unique()], ignore_index=True)
    pd.testing.assert_frame_equal(rows, index)


def test_arrays_prepare_as_the_files_holding_them(data, preparer):
    for name, (vendor, code) in CASES.items():
        from_file = preparer.prepare(oct_path(data, name))
        volume, geometry = read_volume(oct_path(data, name))
        labels = read_volume(oct_path(data, name).with_name("reference.mhd"))[0] if code else None
        from_array = preparer.prepare(volume, geometry, vendor=vendor, labels=labels, name=name)
        for field in ("image", "labels", "roi"):
            assert np.array_equal(getattr(from_array, field), getattr(from_file, field)), field
        assert (from_array.slice_index["oct_path"] == "").all()
        pd.testing.assert_frame_equal(from_array.slice_index.drop(columns="oct_path"),
                                      from_file.slice_index.drop(columns="oct_path"))
    cirrus = oct_path(data, "TRAIN001")
    without_labels = preparer.prepare(*read_volume(cirrus), vendor="Cirrus")
    assert without_labels.name == "volume" and without_labels.labels is None
    assert np.array_equal(without_labels.image, preparer.prepare(cirrus).image)


def test_the_histogram_reference_can_be_the_volume_the_json_or_the_setting(data, work, preparer):
    spectralis = oct_path(data, "TRAIN002")  # the Spectralis case prepare_data.py took as the reference
    assert json.loads((work / config.HISTOGRAM_REFERENCE_JSON).read_text())["path"] == str(spectralis)
    expected = preparer.prepare(oct_path(data, "TRAIN003")).image
    as_json = json.loads((work / config.HISTOGRAM_REFERENCE_JSON).read_text())
    for other in (Preparer(histogram_reference=spectralis), Preparer(histogram_reference=as_json),
                  Preparer(HISTOGRAM_REFERENCE=str(spectralis), **SETTINGS)):
        assert other.reference["counts"] == preparer.reference["counts"]
        assert np.array_equal(other.prepare(oct_path(data, "TRAIN003")).image, expected)
    # another reference matches Topcon differently: the reference is used, not ignored
    other = Preparer(histogram_reference=oct_path(data, "TRAIN001"))
    assert not np.array_equal(other.prepare(oct_path(data, "TRAIN003")).image, expected)


def test_settings_apply_as_prepare_data_pys_set(data, tmp_path):
    sets = [f"{name}={value}" for name, value in OTHER_SETTINGS.items()]
    work = prepared_by_script(data, tmp_path / "work", *sets)
    other = Preparer(histogram_reference=work / config.HISTOGRAM_REFERENCE_JSON, **OTHER_SETTINGS)
    assert other.cfg.MEDIAN_INPLANE == 5 and other.cfg.ENTROPY_THRESHOLD == 0.2
    default = Preparer(histogram_reference=work / config.HISTOGRAM_REFERENCE_JSON, **SETTINGS)
    cirrus = oct_path(data, "TRAIN001")
    assert not np.array_equal(default.prepare(cirrus).image, other.prepare(cirrus).image)
    assert not np.array_equal(default.prepare(cirrus).roi, other.prepare(cirrus).roi)
    for name in CASES:
        assert_written_by_script(other.prepare(oct_path(data, name)), work, tmp_path)


def test_bad_inputs_are_refused_naming_what_was_expected(data, preparer, tmp_path):
    path = oct_path(data, "TRAIN002")
    volume, geometry = read_volume(path)
    labels = np.zeros(volume.shape, np.uint8)
    cases = [
        ((volume,), {}, ValueError, "needs its geometry and vendor"),
        ((volume, geometry), {}, ValueError, "needs its geometry and vendor"),
        ((volume, geometry), {"vendor": "Nidek"}, ValueError, "expected one of VENDORS"),
        ((volume[0], geometry), {"vendor": "Spectralis"}, ValueError, r"expected \(z, y, x\)"),
        ((volume.astype(np.float32), geometry), {"vendor": "Spectralis"}, ValueError, "float32; expected uint8"),
        ((volume, Geometry(spacing_mm=(0.01, 0.0, 0.1))), {"vendor": "Spectralis"}, ValueError, "positive finite"),
        ((volume, geometry), {"vendor": "Spectralis", "labels": labels[:, 1:]}, VolumeError, "differs from"),
        ((volume, geometry), {"vendor": "Spectralis", "labels": labels + 5}, VolumeError, "unexpected label values 5"),
        ((path, geometry), {}, ValueError, "holds its own geometry"),
        ((path,), {"labels": labels}, ValueError, "holds its own geometry"),
        ((path.parent,), {}, FileNotFoundError, "no such file"),
        ((path.with_suffix(".raw"),), {}, ValueError, "oct.raw: not a MetaImage header"),  # as Predictor refuses it
    ]
    for args, keywords, error, message in cases:
        with pytest.raises(error, match=message):
            preparer.prepare(*args, **keywords)
    no_reference = Preparer()
    assert no_reference.reference is None
    assert no_reference.prepare(path).image.dtype == np.uint8  # Spectralis is not matched: no reference needed
    with pytest.raises(ValueError, match=r"Preparer\(histogram_reference=\.\.\.\)"):
        no_reference.prepare(oct_path(data, "TRAIN001"))
    with pytest.raises(ConfigError, match="did you mean MEDIAN_INPLANE"):
        Preparer(MEDIAN_INPLAN=5)
    with pytest.raises(FileNotFoundError, match="no such file"):
        Preparer(histogram_reference=tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"counts": [1, 2]}')
    with pytest.raises(ValueError, match="not a histogram reference"):
        Preparer(histogram_reference=tmp_path / "bad.json")


def test_the_readme_shows_the_docstring_example():
    assert readme_example("from utils.prepare.preparer import").strip() == docstring_example(preparer_module).strip()


def test_the_docstring_example_runs(data, work, tmp_path, monkeypatch, capsys):
    code = docstring_example(preparer_module)
    assert len(code.strip().splitlines()) <= 10
    # the files where the example expects them, relative to the folder it runs in
    monkeypatch.chdir(tmp_path)
    shutil.copytree(oct_path(data, "TRAIN001").parent, tmp_path / "data" / "Cirrus" / "TRAIN001")
    (tmp_path / "work").mkdir()
    shutil.copy(work / config.HISTOGRAM_REFERENCE_JSON, tmp_path / "work")
    exec(compile(code, "utils/prepare/preparer.py", "exec"), {"__name__": "docstring_example"})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("TRAIN001 Cirrus (5, 48, 32) uint8 ROI ") and printed[0].endswith("%")
    assert printed[1] == "True True"
