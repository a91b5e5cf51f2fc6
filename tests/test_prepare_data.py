"""prepare_data.py end to end on tiny trees, and every bad-input path."""

import json

import numpy as np
import pandas as pd
import pytest

import prepare_data
from utils.io.files import read_png
from utils.io.mhd_io import Geometry, read_volume, write_volume
from volume_factory import tiny_volume, write_case


def _run(data, work, *extra):
    return prepare_data.main(["--data-root", str(data), "--work-dir", str(work), "--workers", "1", *extra])


def _snapshot(folder):
    return {p: p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def test_prepares_everything_and_flags_match_the_references(tiny_tree, tmp_path):
    work = tmp_path / "work"
    before = _snapshot(tiny_tree)
    assert _run(tiny_tree, work) == 0
    assert _snapshot(tiny_tree) == before  # nothing written into the data root

    index = pd.read_csv(work / "slice_index.csv")
    assert list(index.columns[:7]) == ["image_name", "vendor", "root", "slice", "is_IRF", "is_SRF", "is_PED"]
    assert index["case"].nunique() == 9 and set(index["vendor"]) == {"Cirrus", "Spectralis", "Topcon"}
    for case, rows in index.groupby("case"):
        oct_path = rows["oct_path"].iloc[0]
        labels, geometry = read_volume(oct_path.replace("oct.mhd", "reference.mhd"))
        assert len(rows) == labels.shape[0] and (rows["height"] == labels.shape[1]).all()
        assert rows["spacing_y_mm"].iloc[0] == pytest.approx(geometry.spacing_mm[1])
        for row in rows.itertuples():
            z = row.slice
            assert row.is_IRF == int((labels[z] == 1).any())
            assert row.is_SRF == int((labels[z] == 2).any())
            assert row.is_PED == int((labels[z] == 3).any())
            image = read_png(work / row.root / "oct" / row.image_name)
            mask = read_png(work / row.root / "reference" / row.image_name)
            roi = read_png(work / row.root / "roi" / row.image_name)
            assert image.shape == mask.shape == roi.shape == labels[z].shape
            np.testing.assert_array_equal(mask, labels[z])
            assert set(np.unique(roi)) <= {0, 255}
            assert (roi[labels[z] > 0] == 255).all()  # fluid always lies inside the ROI

    split = pd.read_csv(work / "split.csv")
    assert split["case"].is_unique and set(split["case"]) == set(index["case"])
    assert {"case", "vendor", "root", "split"} <= set(split.columns)
    lists = {name: pd.read_csv(work / f"slices_{name}.csv") for name in ("train", "val", "test")}
    cases_of = {name: set(rows["case"]) for name, rows in lists.items()}
    assert not (cases_of["train"] & cases_of["val"] or cases_of["train"] & cases_of["test"]
                or cases_of["val"] & cases_of["test"])
    assert sum(len(rows) for rows in lists.values()) == len(index)
    for vendor in ("Cirrus", "Spectralis", "Topcon"):  # every vendor trains
        assert vendor in set(lists["train"]["vendor"])
    assert (work / "prepare_config.json").is_file() and (work / "histogram_reference.json").is_file()


def test_rerun_skips_finished_cases_and_redoes_an_interrupted_one(tiny_tree, tmp_path):
    work = tmp_path / "work"
    assert _run(tiny_tree, work) == 0
    pngs = sorted(work.glob("slices/*/*/*.png"))
    before = {p: p.stat().st_mtime_ns for p in pngs}
    assert _run(tiny_tree, work) == 0
    assert {p: p.stat().st_mtime_ns for p in pngs} == before  # nothing rewritten

    # An interruption inside TRAIN004: a truncated PNG and no completion marker. Only that case is redone.
    victim = work / "slices" / "TRAIN004"
    (victim / "preprocess.json").unlink()
    (victim / "oct" / "TRAIN004_001.png").write_bytes(b"\x89PNG")
    assert _run(tiny_tree, work) == 0
    after = {p: p.stat().st_mtime_ns for p in pngs}
    changed = {p.parent.parent.name for p in pngs if after[p] != before[p]}
    assert changed == {"TRAIN004"}
    assert read_png(victim / "oct" / "TRAIN004_001.png").shape == (40, 32)  # Spectralis
    assert not list(work.rglob("*.tmp*"))


def test_changed_setting_redoes_the_affected_cases(tiny_tree, tmp_path):
    work = tmp_path / "work"
    assert _run(tiny_tree, work, "preprocess") == 0
    image = work / "slices" / "TRAIN001" / "oct" / "TRAIN001_002.png"
    spectralis = work / "slices" / "TRAIN004" / "oct" / "TRAIN004_002.png"
    stamp, spectralis_stamp = image.stat().st_mtime_ns, spectralis.stat().st_mtime_ns
    assert _run(tiny_tree, work, "preprocess", "--set", "MEDIAN_INPLANE=1") == 0
    assert image.stat().st_mtime_ns != stamp  # Cirrus is median filtered: redone
    assert spectralis.stat().st_mtime_ns == spectralis_stamp  # Spectralis is not: kept


def test_steps_run_separately(tiny_tree, tmp_path):
    work = tmp_path / "work"
    assert _run(tiny_tree, work, "preprocess") == 0
    assert not (work / "split.csv").exists() and not list(work.glob("slices/*/roi"))
    assert _run(tiny_tree, work, "split", "roi") == 0
    assert (work / "split.csv").exists() and len(list(work.glob("slices/*/roi/*.png"))) == 9 * 5 - 3


def test_bad_cases_are_reported_and_the_others_prepared(tiny_tree, tmp_path, capsys, rng):
    cirrus = tiny_tree / "RETOUCH-TrainingSet-Cirrus"
    (cirrus / "TRAIN001" / "oct.raw").unlink()  # missing .raw
    (cirrus / "TRAIN002" / "oct.mhd").write_text("garbage\n")  # unreadable header
    write_volume(cirrus / "TRAIN003" / "reference.mhd", np.zeros((5, 10, 32), np.uint8),
                 Geometry((1.0, 1.0, 1.0)))  # size mismatch
    write_volume(tiny_tree / "misc" / "X1" / "oct.mhd", np.zeros((2, 30, 8), np.uint8),
                 Geometry((1.0, 1.0, 1.0)))  # unknown vendor
    labels, _ = read_volume(tiny_tree / "RETOUCH-TrainingSet-Topcon" / "TRAIN007" / "reference.mhd")
    labels[0, 0, 0] = 9
    write_volume(tiny_tree / "RETOUCH-TrainingSet-Topcon" / "TRAIN007" / "reference.mhd", labels,
                 Geometry((0.047, 0.0523, 0.047)))  # a label that is no fluid code

    work = tmp_path / "work"
    assert _run(tiny_tree, work) == 1
    err = capsys.readouterr().err
    expected = ["TRAIN001/oct.mhd: its data file oct.raw is missing",
                "TRAIN002/oct.mhd: not a MetaImage header",
                "TRAIN003/reference.mhd: size (z, y, x) (5, 10, 32) differs from its oct.mhd (5, 48, 32)",
                "X1/oct.mhd: unknown vendor",
                "TRAIN007/reference.mhd: unexpected label values 9; expected only [0, 1, 2, 3]"]
    for message in expected:
        assert sum(message in line for line in err.splitlines()) == 1, message
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 5  # one line per problem
    assert "5 problem(s)" in err
    index = pd.read_csv(work / "slice_index.csv")
    assert set(index["case"]) == {"TRAIN004", "TRAIN005", "TRAIN006", "TRAIN008", "TRAIN009"}
    assert len(list(work.glob("slices/*/roi/*.png"))) == len(index)


def test_empty_data_root(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert _run(tmp_path / "data", tmp_path / "work") == 1
    assert "data: no oct.mhd nor vendor file (.vol .e2e .xml .img" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_work_dir_inside_data_root_is_refused(tiny_tree, capsys):
    assert _run(tiny_tree, tiny_tree / "work") == 2  # a usage error
    assert "lies inside the data root" in capsys.readouterr().err
    assert not (tiny_tree / "work").exists()


def test_split_file_naming_unknown_cases(tiny_tree, tmp_path, capsys):
    given = tmp_path / "my_split.csv"
    pd.DataFrame({"case": ["TRAIN001", "TRAIN004", "GHOST"], "split": ["train", "val", "test"]}).to_csv(
        given, index=False)
    assert _run(tiny_tree, tmp_path / "work", "--split-file", str(given)) == 1
    err = capsys.readouterr().err
    assert "my_split.csv: names case(s) that are not among the prepared cases: GHOST" in err
    assert set(pd.read_csv(tmp_path / "work" / "slices_train.csv")["case"]) == {"TRAIN001"}
    assert set(pd.read_csv(tmp_path / "work" / "slices_val.csv")["case"]) == {"TRAIN004"}


def test_test_set_cases_without_reference(tmp_path, rng, capsys):
    data = tmp_path / "data"
    write_case(data / "Spectralis" / "TEST001", "Spectralis", rng, with_reference=False)
    write_case(data / "Cirrus" / "TEST002", "Cirrus", rng, with_reference=False)
    assert _run(data, tmp_path / "work") == 0
    index = pd.read_csv(tmp_path / "work" / "slice_index.csv")
    assert index["is_IRF"].isna().all() and not index["has_reference"].any()
    assert set(pd.read_csv(tmp_path / "work" / "split.csv")["split"]) == {"test"}
    assert not list((tmp_path / "work").glob("slices/*/reference"))
    assert len(list((tmp_path / "work").glob("slices/*/roi/*.png"))) == 4 + 5


def test_vendor_files_are_cases_without_reference_and_a_broken_one_fails_alone(tmp_path, rng, capsys):
    """A Heidelberg .vol and a Cirrus .img under the data root are prepared as test cases (no reference), with the
    spacing the .vol header and CIRRUS_IMG_SPACING_MM give; a truncated .img fails in one line naming it."""
    from vendor_factory import write_img, write_vol

    data = tmp_path / "data"
    write_case(data / "Spectralis" / "TRAIN001", "Spectralis", rng)
    spectralis = (tiny_volume("Spectralis", rng) >> 8).astype(np.uint8)
    exports = data / "Exports"  # sorts before "Spectralis": still not the histogram reference
    exports.mkdir(parents=True)
    write_vol(exports / "visit1.vol", spectralis, (0.0114, 0.0039, 0.12))
    write_vol(exports / "TRAIN001.vol", spectralis, (0.0114, 0.0039, 0.12))  # the RETOUCH case keeps its name
    (exports / "notes.xml").write_text("<notes>not an export</notes>\n")  # passed over
    (exports / "._visit1.vol").write_bytes(b"\0" * 4096)  # a macOS resource-fork copy: passed over
    cirrus = tiny_volume("Cirrus", rng)
    write_img(exports / "zeiss.img", cirrus)
    broken = write_img(exports / "broken.img", cirrus)
    broken.write_bytes(broken.read_bytes()[:-7])
    work = tmp_path / "work"
    assert _run(data, work, "--set", "CIRRUS_IMG_SPACING_MM=(0.012,0.002,0.047)",
                "--set", f"CIRRUS_IMG_SHAPE=({cirrus.shape[1]},{cirrus.shape[2]})") == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.img" in errors[0]
    index = pd.read_csv(work / "slice_index.csv")
    assert set(index["case"]) == {"TRAIN001", "TRAIN001_vol", "visit1", "zeiss"}
    assert index.set_index("case").loc["TRAIN001", "oct_path"].iloc[0].endswith("TRAIN001/oct.mhd")
    reference = json.loads((work / "histogram_reference.json").read_text())["path"]
    assert reference.endswith("TRAIN001/oct.mhd")  # a vendor file is never the automatic reference
    by_case = {case: rows for case, rows in index.groupby("case")}
    assert not by_case["visit1"]["has_reference"].any() and by_case["visit1"]["is_IRF"].isna().all()
    assert len(by_case["visit1"]) == spectralis.shape[0] and len(by_case["zeiss"]) == cirrus.shape[0]
    assert by_case["visit1"]["spacing_z_mm"].iloc[0] == pytest.approx(0.12)
    assert by_case["zeiss"]["spacing_x_mm"].iloc[0] == pytest.approx(0.012)
    assert (by_case["zeiss"]["height"] == cirrus.shape[1]).all()
    image = read_png(work / by_case["visit1"]["root"].iloc[0] / "oct" / by_case["visit1"]["image_name"].iloc[0])
    assert image.shape == spectralis.shape[1:]
    split = pd.read_csv(work / "split.csv").set_index("case")["split"]
    assert split["visit1"] == split["zeiss"] == "test"


@pytest.mark.parametrize("override, message", [
    ("ENTROPY_TRESHOLD=0.1", "did you mean ENTROPY_THRESHOLD?"),  # no such setting
    ("MEDIAN_SLICES=three", "expected a int"),  # wrong type
    ("BATCH_SIZE=0", "BATCH_SIZE=0: expected an integer >= 1"),  # a value that cannot work
])
def test_configuration_error_is_one_line_and_status_2(tiny_tree, tmp_path, capsys, override, message):
    assert _run(tiny_tree, tmp_path / "work", "--set", override) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "work").exists()


def test_a_case_fixed_after_a_partial_run_joins_the_split(tiny_tree, tmp_path, capsys):
    raw = tiny_tree / "RETOUCH-TrainingSet-Cirrus" / "TRAIN002" / "oct.raw"
    kept = raw.read_bytes()
    raw.unlink()  # the first run fails on this case
    work = tmp_path / "work"
    assert _run(tiny_tree, work) == 1
    assert "TRAIN002" not in set(pd.read_csv(work / "split.csv", dtype=str)["case"])
    raw.write_bytes(kept)  # fixed
    assert _run(tiny_tree, work) == 0
    split = pd.read_csv(work / "split.csv", dtype=str)
    assert sorted(split["case"]) == [f"TRAIN{n:03d}" for n in range(1, 10)]
    listed = set()
    for name in ("train", "val", "test"):
        listed |= set(pd.read_csv(work / f"slices_{name}.csv", dtype=str)["case"])
    assert "TRAIN002" in listed
    assert "TRAIN002 ->" in capsys.readouterr().out


def test_case_names_that_pandas_would_turn_into_numbers_or_nan(tmp_path, rng):
    data = tmp_path / "data"
    for vendor, name in (("Spectralis", "NA"), ("Cirrus", "001"), ("Topcon", "None"), ("Cirrus", "=1+1")):
        write_case(data / vendor / name, vendor, rng)
    work = tmp_path / "work"
    for _ in range(2):  # the rerun reads the finished cases' slices.csv back
        assert _run(data, work) == 0
    split = pd.read_csv(work / "split.csv", dtype=str, keep_default_na=False)
    assert sorted(split["case"]) == ["'=1+1", "001", "NA", "None"]  # a spreadsheet shows '=1+1 as text
    from utils.io.tables import read_slice_index
    import config
    index = read_slice_index(work / "slice_index.csv", config.FLUIDS)
    assert sorted(index["case"].unique()) == ["001", "=1+1", "NA", "None"]  # the true names
    assert (work / "slices" / "=1+1" / "oct" / "=1+1_000.png").is_file()


def _hashes(folder):
    import hashlib
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("setting", [
    "SLICE_INDEX_CSV=../data/RETOUCH-TrainingSet-Cirrus/TRAIN001/oct.mhd",
    "SPLIT_CSV=../data/split.csv",
    "SPLIT_SLICES_CSV=../data/slices_{split}.csv",
    "SLICES_SUBDIR=../data",
    "HISTOGRAM_REFERENCE_JSON=../data/RETOUCH-TrainingSet-Cirrus/TRAIN001/oct.raw",
])
def test_path_settings_cannot_write_into_the_data(tiny_tree, tmp_path, capsys, setting):
    before = _hashes(tiny_tree)
    assert _run(tiny_tree, tmp_path / "work", "--set", setting) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{setting.split('=')[0]} lies inside the data root" in err[0]
    assert _hashes(tiny_tree) == before and not (tmp_path / "work").exists()


def test_split_file_cannot_be_overwritten(tiny_tree, tmp_path, capsys):
    given = tmp_path / "work" / "mine.csv"
    given.parent.mkdir()
    given.write_text("case,split\n")
    assert _run(tiny_tree, tmp_path / "work", "--split-file", str(given), "--set", "SLICE_INDEX_CSV=mine.csv") == 2
    assert "SLICE_INDEX_CSV is the --split-file" in capsys.readouterr().err
    assert given.read_text() == "case,split\n"


def test_unwritable_work_dir_is_one_line_and_status_1(tiny_tree, tmp_path, capsys, monkeypatch):
    import utils.io.files

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "work" / ".x.tmp"))

    monkeypatch.setattr(utils.io.files.tempfile, "mkstemp", full)
    assert _run(tiny_tree, tmp_path / "work") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err and all("No space left on device" in line and "Errno" not in line for line in err)
    assert err[-1].startswith(f"error: {tmp_path / 'work' / '.x.tmp'}: No space left on device; the outputs")


def test_broken_automatic_histogram_reference_takes_the_next_spectralis_case(tiny_tree, tmp_path, capsys):
    first = tiny_tree / "RETOUCH-TrainingSet-Spectralis" / "TRAIN004" / "oct.raw"
    first.write_bytes(first.read_bytes()[:100])
    work = tmp_path / "work"
    assert _run(tiny_tree, work) == 1
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error: /")]
    assert len(errors) == 1 and "TRAIN004/oct.mhd: its data file oct.raw holds 100 bytes" in errors[0]
    assert "histogram reference " in captured.out and "TRAIN005/oct.mhd" in captured.out
    import json
    assert json.loads((work / "histogram_reference.json").read_text())["path"].endswith("TRAIN005/oct.mhd")
    index = pd.read_csv(work / "slice_index.csv", dtype=str)
    assert set(index["case"]) == {f"TRAIN{n:03d}" for n in range(1, 10)} - {"TRAIN004"}
