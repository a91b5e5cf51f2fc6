"""Hostile inputs through all four scripts: malformed headers, awkward names and broken split files.

For each: the exit status, one error line naming the file, the other cases' outputs complete, and nothing changed
under the data root (hashed before and after).
"""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

import evaluate
import predict
import prepare_data
import train
from utils.io.mhd_io import Geometry, write_volume
from volume_factory import write_case

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUICK = ["--set", "PATCH_SHAPE=(128, 96)", "--set", "PATCH_BORDER=8", "--set", "BATCH_SIZE=4",
         "--set", "VAL_BSCANS=4", "--set", "LOADER_WORKERS=0", "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1"]

GOOD = {"Cirrus/C1": "Cirrus", "Cirrus/C2": "Cirrus", "Cirrus/=HYPERLINK(1)": "Cirrus", "Spectralis/S1": "Spectralis",
        "Spectralis/S2": "Spectralis", "Topcon/NA": "Topcon", "Topcon/001": "Topcon"}


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _bad_cases(root, rng):
    """Each hostile case -> the text its one error line must hold (case folder/oct.mhd is named in it)."""
    bad = {}
    write_case(root / "Cirrus" / "COMPRESSED", "Cirrus", rng)
    _edit(root / "Cirrus" / "COMPRESSED" / "oct.mhd", "CompressedData = False", "CompressedData = True")
    bad["Cirrus/COMPRESSED/oct.mhd"] = "CompressedData = True, but its data file oct.raw is not zlib data"
    write_case(root / "Cirrus" / "ESCAPE", "Cirrus", rng)
    _edit(root / "Cirrus" / "ESCAPE" / "oct.mhd", "ElementDataFile = oct.raw",
          "ElementDataFile = ../../Cirrus/C1/oct.raw")
    bad["Cirrus/ESCAPE/oct.mhd"] = "points outside the header's folder"
    write_case(root / "Topcon" / "TRUNCATED", "Topcon", rng)
    raw = root / "Topcon" / "TRUNCATED" / "oct.raw"
    raw.write_bytes(raw.read_bytes()[:123])
    bad["Topcon/TRUNCATED/oct.mhd"] = "its data file oct.raw holds 123 bytes"
    write_case(root / "Topcon" / "NANSPACING", "Topcon", rng)
    _edit(root / "Topcon" / "NANSPACING" / "oct.mhd", "ElementSpacing = 0.047", "ElementSpacing = nan")
    bad["Topcon/NANSPACING/oct.mhd"] = "ElementSpacing = nan"
    write_case(root / "Spectralis" / "A_NOBSCANS", "Spectralis", rng)  # first Spectralis: the histogram reference
    _edit(root / "Spectralis" / "A_NOBSCANS" / "oct.mhd", "DimSize = 32 40 4", "DimSize = 32 40 0")
    (root / "Spectralis" / "A_NOBSCANS" / "oct.raw").write_bytes(b"")
    bad["Spectralis/A_NOBSCANS/oct.mhd"] = "DimSize = 32 40 0; expected 3 sizes >= 1"
    return bad


def _negative_labels(root, rng):
    """A case whose OCT is fine but whose reference holds -1 (prepare and evaluate refuse it; predict does not
    read references)."""
    write_case(root / "Cirrus" / "NEGATIVE", "Cirrus", rng)
    labels = np.zeros((5, 48, 32), np.int8)
    labels[1, 20, 3] = -1
    write_volume(root / "Cirrus" / "NEGATIVE" / "reference.mhd", labels, Geometry((0.047, 0.0417, 0.047)))
    return "Cirrus/NEGATIVE/reference.mhd"


def _hashes(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error: ")]


def _assert_one_line_each(err, root, expected):
    lines = _error_lines(err)
    for relative, text in expected.items():
        naming = [line for line in lines if str(root / relative) in line]
        assert len(naming) == 1, (relative, lines)
        assert text in naming[0], (relative, naming[0])
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """prepare -> train -> predict -> evaluate over a tree of good and hostile cases, each script's status and
    stderr kept, the data root hashed before and after."""
    base = tmp_path_factory.mktemp("hostile")
    root, work = base / "data", base / "work"
    rng = np.random.default_rng(7)
    for relative, vendor in GOOD.items():
        write_case(root / relative, vendor, rng, fluid_code=1 + len(relative) % 3)
    bad = _bad_cases(root, rng)
    negative = _negative_labels(root, rng)
    before = _hashes(root)
    import contextlib
    import io

    results = {}
    for name, call in (
            ("prepare", lambda: prepare_data.main(["--data-root", str(root), "--work-dir", str(work),
                                                   "--workers", "1"])),
            ("train", lambda: train.main(["--work-dir", str(work), "--run-dir", str(work / "runs" / "r"), *QUICK])),
            ("predict", lambda: predict.main(["--checkpoint", str(work / "runs" / "r" / "best.pt"), "--out",
                                              str(base / "pred"), "--set", f"WORK_DIR={work}", str(root)])),
            ("evaluate", lambda: evaluate.main(["--pred", str(base / "pred"), "--data-root", str(root)]))):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            status = call()
        results[name] = (status, err.getvalue())
    return {"root": root, "work": work, "pred": base / "pred", "bad": bad, "negative": negative,
            "before": before, "after": _hashes(root), "results": results}


def test_the_data_root_is_unchanged(sweep):
    assert sweep["after"] == sweep["before"]


def test_prepare_reports_each_bad_case_once_and_prepares_the_others(sweep):
    status, err = sweep["results"]["prepare"]
    assert status == 1
    _assert_one_line_each(err, sweep["root"], {**sweep["bad"], sweep["negative"]: "unexpected label values -1"})
    for relative in GOOD:
        case = relative.split("/")[1]
        folder = sweep["work"] / "slices" / case
        assert (folder / "preprocess.json").is_file() and (folder / "roi.json").is_file(), case
        assert len(list((folder / "oct").glob("*.png"))) == len(list((folder / "roi").glob("*.png"))) > 0
    split = pd.read_csv(sweep["work"] / "split.csv", dtype=str, keep_default_na=False)
    assert sorted(split["case"]) == sorted(["'=HYPERLINK(1)", "001", "C1", "C2", "NA", "S1", "S2"])
    reference = json.loads((sweep["work"] / "histogram_reference.json").read_text())
    assert reference["path"] == str(sweep["root"] / "Spectralis" / "S1" / "oct.mhd")  # the next good Spectralis


def test_train_runs_on_what_was_prepared(sweep):
    status, err = sweep["results"]["train"]
    assert status == 0, err
    assert (sweep["work"] / "runs" / "r" / "best.pt").is_file()


def test_predict_reports_each_bad_volume_once_and_segments_the_others(sweep):
    status, err = sweep["results"]["predict"]
    assert status == 1
    _assert_one_line_each(err, sweep["root"], sweep["bad"])
    volumes = pd.read_csv(sweep["pred"] / "volumes.csv", dtype=str, keep_default_na=False)
    names = [relative.split("/")[1] for relative in GOOD] + ["NEGATIVE"]
    assert sorted(volumes["case"]) == sorted("'" + n if n.startswith("=") else n for n in names)
    for name in names:
        assert (sweep["pred"] / name / "segmentation.mhd").is_file() and (sweep["pred"] / name / "segmentation.raw")


def test_evaluate_reports_the_bad_reference_and_scores_the_others(sweep):
    status, err = sweep["results"]["evaluate"]
    assert status == 1
    lines = [line for line in _error_lines(err) if sweep["negative"] in line]
    assert len(lines) == 1 and "unexpected label values -1" in lines[0]
    table = pd.read_csv(sweep["pred"] / "evaluation" / "per_case.csv", dtype=str, keep_default_na=False)
    assert sorted(table["case"].unique()) == sorted(["'=HYPERLINK(1)", "001", "C1", "C2", "NA", "S1", "S2"])


@pytest.mark.parametrize("content, message", [
    ("case,split\nC1,train\nC1,test\nC2,val\n", "case(s) listed more than once: C1 (train, test)"),
    ("case,split\nC1,train\nC1,train\nC2,val\n", "case(s) listed more than once: C1 (train, train)"),
    ("case,split\nC1,train\n,val\n", "have a blank case cell"),
    ("case,split\nC1,\nC2,val\n", "say (blank)"),
    ("case,split\nC1,train\nC2,holdout\n", "say holdout"),
    ("case,fold\nC1,1\n", "split file lacks the column(s) ['split']"),
    ("case,split\nC1,train\n", "does not list"),
    ("\x00\x01binary", "split file lacks the column(s)"),
])
def test_malformed_split_files(sweep, tmp_path, capsys, content, message):
    """The prepared work dir of the sweep, copied, split again from each bad file: status 1, one line naming it."""
    import shutil

    work = tmp_path / "work"
    shutil.copytree(sweep["work"], work, ignore=shutil.ignore_patterns("runs"))
    given = tmp_path / "given.csv"
    given.write_text(content)
    before = _hashes(sweep["root"])
    status = prepare_data.main(["--data-root", str(sweep["root"]), "--work-dir", str(work), "--split-file",
                                str(given), "--workers", "1", "split"])
    err = capsys.readouterr().err
    assert status == 1
    lines = [line for line in _error_lines(err) if str(given) in line]
    assert any(message in line for line in lines), lines
    assert "Traceback" not in err
    assert _hashes(sweep["root"]) == before
    listed = [set(pd.read_csv(work / f"slices_{name}.csv", dtype=str)["case"]) for name in ("train", "val", "test")]
    assert not (listed[0] & listed[2]) and not (listed[0] & listed[1]) and not (listed[1] & listed[2])


@pytest.mark.parametrize("content, message", [
    ("case,split\nC1,test\nC1,train\n", "listed more than once: C1"),
    ("case,split\n,test\nC1,test\n", "have a blank case cell"),
    ("x\n", "split file lacks the column(s)"),
])
def test_evaluate_with_a_bad_split_file_is_one_line(sweep, tmp_path, capsys, content, message):
    given = tmp_path / "given.csv"
    given.write_text(content)
    status = evaluate.main(["--pred", str(sweep["pred"]), "--data-root", str(sweep["root"]), "--split-file",
                            str(given), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    lines = [line for line in _error_lines(err) if str(given) in line]
    assert len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "eval").exists()
