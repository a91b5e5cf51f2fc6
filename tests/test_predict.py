"""predict.py end to end on tiny volumes with a freshly initialised U-Net checkpoint."""

import json
import os
import re
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import config
import predict
from utils.configuration import config_to_dict, load_config
from utils.io.mhd_io import Geometry, read_volume, write_volume
from utils.io.vendor_files import VendorFileSettings
from utils.predict import etdrs, label_tables
from utils.predict.markers import MARKER_FILE
from utils.predict.outputs import OVERLAY_FOLDER
from utils.model.checkpoints import save_checkpoint
from utils.model.networks import build_unet
from utils.prepare.preprocessing import histogram_reference
from html_check import check_html  # a strict html.parser check (no headless browser here)
from volume_factory import TINY_SPECS, tiny_volume

REPO = Path(predict.__file__).resolve().parent
UNET = {"encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3, "classes": config.N_CLASSES}
ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z: not the identity
# The tiny volumes have ~0.045 mm rows; a training reference spacing near that keeps them small after depth scaling.
TRAINING_SETTINGS = {"SPECTRALIS_AXIAL_SPACING_MM": 0.03}
OTHER_MEDIAN = config.MEDIAN_INPLANE + 2  # a preprocessing setting unlike the checkpoint's


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def reproducible_runs(fp32_inference):
    """Every run of this module in fp32 (see :func:`conftest.fp32_inference`)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One case per vendor in the RETOUCH layout, each with its own origin and a rotated direction."""
    root = tmp_path_factory.mktemp("predict") / "data"
    rng = np.random.default_rng(5)
    for number, vendor in enumerate(TINY_SPECS, 1):
        geometry = Geometry(spacing_mm=TINY_SPECS[vendor][2], origin_mm=(1.0, 2.0, float(number)),
                            direction=ROTATED)
        write_volume(root / f"RETOUCH-TrainingSet-{vendor}" / f"TRAIN{number:03d}" / "oct.mhd",
                     tiny_volume(vendor, rng), geometry)
    return root


@pytest.fixture(scope="module")
def checkpoint(data, tmp_path_factory):
    """``work/runs/quick/best.pt``: random U-Net weights with the config and histogram reference train.py saves."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("work") / "runs" / "quick" / "best.pt"
    cfg = load_config([f"{name}={value}" for name, value in TRAINING_SETTINGS.items()])
    spectralis = next(data.glob("*Spectralis/*/oct.mhd"))
    save_checkpoint(path, {"model_args": UNET, "model_state": build_unet(UNET).state_dict(), "epoch": 4,
                           "config": config_to_dict(cfg), "metrics": {},
                           "histogram_reference": histogram_reference(spectralis, VendorFileSettings())})
    return path


@pytest.fixture(scope="module")
def predicted(data, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "pred"
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--overlays", "2", str(data)]) == 0
    return out


def test_outputs_have_the_input_geometry_and_labels(data, predicted):
    cases = sorted(path.parent for path in data.glob("*/*/oct.mhd"))
    assert len(cases) == 3
    for folder in cases:
        volume, geometry = read_volume(folder / "oct.mhd")
        labels, out_geometry = read_volume(predicted / folder.name / config.SEGMENTATION_FILE)
        assert labels.shape == volume.shape and labels.dtype == np.uint8
        assert out_geometry == geometry and out_geometry.direction == ROTATED
        assert labels.max() < config.N_CLASSES
        assert len(list((predicted / folder.name / OVERLAY_FOLDER).glob("*.png"))) == 2
    assert sorted(path.name for path in next(data.glob("*Cirrus/*")).iterdir()) == ["oct.mhd", "oct.raw"]


def test_volumes_csv_agrees_with_the_label_volumes(data, predicted):
    table = pd.read_csv(predicted / config.VOLUMES_CSV, dtype={"case": str})
    assert list(table.columns) == ["case", "vendor", "n_bscans", "IRF_volume_mm3", "SRF_volume_mm3",
                                   "PED_volume_mm3", "IRF_presence", "SRF_presence", "PED_presence",
                                   "fovea_bscan", "fovea_column", "fovea_found_by", "etdrs_scanned_fraction",
                                   "laterality",
                                   *[f"{fluid}_{field}_mm3" for fluid in config.FLUIDS
                                     for field in etdrs.SUBFIELDS + etdrs.ANATOMICAL_SUBFIELDS]]
    assert table["laterality"].isna().all()  # MetaImage volumes: unknown, nasal/temporal columns empty
    assert table[[f"IRF_{field}_mm3" for field in etdrs.ANATOMICAL_SUBFIELDS]].isna().all().all()
    assert table["case"].tolist() == ["TRAIN001", "TRAIN002", "TRAIN003"]
    assert table["vendor"].tolist() == list(TINY_SPECS)
    for row in table.itertuples():
        labels, geometry = read_volume(predicted / row.case / config.SEGMENTATION_FILE)
        assert row.n_bscans == labels.shape[0]
        for fluid, code in config.FLUIDS.items():
            expected = np.count_nonzero(labels == code) * math.prod(geometry.spacing_mm)
            assert getattr(row, f"{fluid}_volume_mm3") == pytest.approx(expected, rel=1e-9)
            assert 0.0 <= getattr(row, f"{fluid}_presence") <= 1.0
            # the tiny volumes (1.5 x 0.6 mm) lie inside the 6 mm grid: every voxel is in some subfield
            fovea = etdrs.Fovea(row.fovea_bscan, row.fovea_column, row.fovea_found_by)
            by_field = etdrs.subfield_volumes_mm3(labels, geometry, fovea, {fluid: code})[fluid]
            assert [getattr(row, f"{fluid}_{field}_mm3") for field in etdrs.SUBFIELDS] == pytest.approx(
                list(by_field.values()))
            assert sum(by_field.values()) == pytest.approx(expected, rel=1e-9)
        assert row.fovea_found_by in (etdrs.FOUND_BY_SURFACE, etdrs.FOUND_BY_CENTRE)
    saved = json.loads((predicted / config.CONFIG_JSON).read_text())
    assert saved["SPECTRALIS_AXIAL_SPACING_MM"] == TRAINING_SETTINGS["SPECTRALIS_AXIAL_SPACING_MM"]  # the model's
    assert saved["INFERENCE_BATCH_SIZE"] >= 1


def test_rerun_skips_finished_cases_and_redoes_changed_settings(data, checkpoint, predicted, tmp_path, capsys):
    out = tmp_path / "pred"
    shutil.copytree(predicted, out)
    segmentation = out / "TRAIN002" / config.SEGMENTATION_FILE
    before = segmentation.stat().st_mtime_ns
    (out / config.VOLUMES_CSV).unlink()
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set", f"MEDIAN_INPLANE={OTHER_MEDIAN}",
                         "--set", "SPECTRALIS_AXIAL_SPACING_MM=0.03", str(data)]) == 0  # the model's settings stay
    captured = capsys.readouterr()
    assert "0 case(s) segmented, 3 already done" in captured.out
    assert f"--set MEDIAN_INPLANE={OTHER_MEDIAN} ignored" in captured.err
    assert f"MEDIAN_INPLANE={config.MEDIAN_INPLANE} in the checkpoint" in captured.err
    assert "SPECTRALIS_AXIAL_SPACING_MM" not in captured.err  # the same as the checkpoint's
    assert json.loads((out / config.CONFIG_JSON).read_text())["MEDIAN_INPLANE"] == config.MEDIAN_INPLANE
    assert segmentation.stat().st_mtime_ns == before
    assert len(pd.read_csv(out / config.VOLUMES_CSV)) == 3  # rebuilt from the markers

    cirrus = next(data.glob("*Cirrus/*/oct.mhd"))
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set",
                         "PRESENCE_MIN_VOLUME_MM3=0.5", str(cirrus)]) == 0
    captured = capsys.readouterr()
    assert "1 case(s) segmented, 0 already done" in captured.out
    assert "2 case folder(s)" in captured.err  # made with the old setting: left out of volumes.csv
    assert pd.read_csv(out / config.VOLUMES_CSV)["case"].tolist() == ["TRAIN001"]


def test_a_cpu_whose_bf16_runs_slower_segments_in_fp32_and_says_why(data, checkpoint, predicted, tmp_path, capsys,
                                                                       monkeypatch):
    from utils.model import runtime
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(runtime, "bf16_speedup", lambda: 0.5)
    out = tmp_path / "pred"
    shutil.copytree(predicted, out)
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set", "MIXED_PRECISION=True",
                         str(data)]) == 0
    printed = capsys.readouterr().out
    assert "on cpu (fp32)" in printed
    assert "note: fp32: this CPU has bf16 but ran a convolution 0.50x as fast in bf16 as in fp32" in printed
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set", "MIXED_PRECISION=True",
                         "--set", "BF16_SPEED_CHECK=False", str(data)]) == 0  # a local setting: taken, not ignored
    captured = capsys.readouterr()
    assert "on cpu (torch.bfloat16)" in captured.out and "BF16_SPEED_CHECK" not in captured.err


def test_failing_case_is_reported_and_the_others_written(data, checkpoint, tmp_path, capsys):
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    raw = next(broken.glob("*Spectralis/*/oct.raw"))
    raw.unlink()
    out = tmp_path / "pred"
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), str(broken)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(raw.with_suffix(".mhd")) in errors[0] and "oct.raw is missing" in errors[0]
    assert sorted(path.parent.name for path in out.glob(f"*/{config.SEGMENTATION_FILE}")) == ["TRAIN001", "TRAIN003"]
    assert pd.read_csv(out / config.VOLUMES_CSV)["case"].tolist() == ["TRAIN001", "TRAIN003"]


def test_default_checkpoint_is_the_latest_run_and_default_out_its_predictions(data, checkpoint, tmp_path, capsys):
    work = tmp_path / "work"
    older = work / "runs" / "older" / "best.pt"
    latest = work / "runs" / "latest" / "best.pt"
    for path in (older, latest):
        path.parent.mkdir(parents=True)
        shutil.copy(checkpoint, path)
    os.utime(older, (1e9, 1e9))  # modified long before the latest
    topcon = next(data.glob("*Topcon/*/oct.mhd"))
    assert predict.main(["--set", f"WORK_DIR={work}", str(topcon)]) == 0
    out = work / "predictions" / "latest"
    assert (out / topcon.parent.name / config.SEGMENTATION_FILE).is_file()
    assert pd.read_csv(out / config.VOLUMES_CSV)["vendor"].tolist() == ["Topcon"]  # vendor from the path


def test_no_checkpoint_is_an_error_naming_the_runs_folder(data, tmp_path, capsys):
    assert predict.main(["--set", f"WORK_DIR={tmp_path}", str(data)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'runs'}: no run with a best.pt" in err and "--checkpoint" in err
    assert not (tmp_path / "predictions").exists()


def test_bad_arguments(data, checkpoint, tmp_path, capsys):
    with pytest.raises(SystemExit):
        predict.main(["--set", "INFERENCE_BATCH_SIZ=2", str(data)])
    assert "did you mean INFERENCE_BATCH_SIZE" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path), "--set",
                         "INFERENCE_TILE_SHAPE=(100, 64)", str(data)]) == 2
    assert "INFERENCE_TILE_SHAPE must be (height, width), positive multiples of 32" in capsys.readouterr().err
    case_dir = next(data.glob("*Cirrus/*"))
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(case_dir.parent), str(data)]) == 2
    assert "--out lies inside the input folder" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path), str(tmp_path / "nothing")]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_a_preset_gives_predict_its_inference_settings_without_notes_on_the_training_ones(data, checkpoint, tmp_path,
                                                                                          capsys):
    out = tmp_path / "preset"
    cirrus = next(data.glob("*Cirrus/*/oct.mhd"))
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--preset", "improved", str(cirrus)]) == 0
    assert json.loads((out / config.CONFIG_JSON).read_text())["PREDICT_REGION"] == "all"  # the preset's
    assert "ignored" not in capsys.readouterr().err  # its MODEL, LOSS, ... describe training: no note each


def test_presence_gate_and_component_minimum_reach_the_label_volumes(data, checkpoint, tmp_path):
    out = tmp_path / "gated"
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set", "PRESENCE_GATE=1.0",
                         "--set", "MIN_COMPONENT_MM3=1000.0", str(data)]) == 0
    table = pd.read_csv(out / config.VOLUMES_CSV, dtype={"case": str})
    for row in table.itertuples():
        labels, _ = read_volume(out / row.case / config.SEGMENTATION_FILE)
        assert not labels.any()  # every fluid gated (presence < 1) and no component reaches 1000 mm³
        assert all(getattr(row, f"{fluid}_volume_mm3") == 0 for fluid in config.FLUIDS)
    assert json.loads((out / config.CONFIG_JSON).read_text())["PRESENCE_GATE"] == 1.0


def test_fluid_closing_reaches_the_label_volumes_and_only_adds_fluid(data, checkpoint, tmp_path):
    cirrus = next(data.glob("*Cirrus/*/oct.mhd"))
    plain, closed = tmp_path / "plain", tmp_path / "closed"
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(plain), str(cirrus)]) == 0
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(closed), "--set", "FLUID_CLOSING_MM=0.2",
                         str(cirrus)]) == 0
    case = cirrus.parent.name
    before, _ = read_volume(plain / case / config.SEGMENTATION_FILE)
    after, _ = read_volume(closed / case / config.SEGMENTATION_FILE)
    assert before.any(), "the test model must mark some fluid for the closing to act on"
    assert (after[before > 0] == before[before > 0]).all() and (after > 0).sum() > (before > 0).sum()
    assert json.loads((closed / config.CONFIG_JSON).read_text())["FLUID_CLOSING_MM"] == 0.2


def test_a_fluid_threshold_reaches_the_label_volumes_and_nests_them(data, checkpoint, tmp_path):
    cirrus = next(data.glob("*Cirrus/*/oct.mhd"))
    case = cirrus.parent.name
    fluid = {}
    for threshold in (0.2, 0.8):
        out = tmp_path / f"t{threshold}"
        assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set",
                             f"FLUID_THRESHOLD={threshold}", str(cirrus)]) == 0
        fluid[threshold] = read_volume(out / case / config.SEGMENTATION_FILE)[0] > 0
        assert json.loads((out / config.CONFIG_JSON).read_text())["FLUID_THRESHOLD"] == threshold
    assert fluid[0.2].sum() > fluid[0.8].sum() and not (fluid[0.8] & ~fluid[0.2]).any()  # a higher bar marks less


@pytest.mark.parametrize("where", ["data root", "case folder", "file's folder", "run folder", "input's ancestor",
                                   "file's ancestor", "another vendor's folder", "link into the data"])
def test_out_never_lands_in_the_data_or_the_run(data, checkpoint, tmp_path, capsys, where):
    import hashlib

    def hashes(folder):
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}

    case_dir = next(data.glob("*Cirrus/*"))
    out, inputs = {"data root": (data, [data]), "case folder": (case_dir / "pred", [data]),
                   "file's folder": (case_dir, [case_dir / "oct.mhd"]),
                   "run folder": (checkpoint.parent, [case_dir / "oct.mhd"]),
                   "input's ancestor": (data, [case_dir]), "file's ancestor": (data.parent, [case_dir / "oct.mhd"]),
                   # beside the inputs, in the data root their vendor folders lie in
                   "another vendor's folder": (next(data.glob("*Topcon")) / "new", [case_dir / "oct.mhd"]),
                   "link into the data": (tmp_path / "link", [case_dir / "oct.mhd"])}[where]
    if where == "link into the data":
        out.symlink_to(next(data.glob("*Topcon")), target_is_directory=True)
    before, run_before = hashes(data), hashes(checkpoint.parent)
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), *map(str, inputs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}: --out ")
    assert hashes(data) == before and hashes(checkpoint.parent) == run_before


def test_out_holding_a_link_into_the_data_where_a_case_goes_is_refused(data, checkpoint, tmp_path, capsys):
    case_dir = next(data.glob("*Cirrus/*"))
    out = tmp_path / "pred"
    out.mkdir()
    (out / case_dir.name).symlink_to(next(data.glob("*Topcon")), target_is_directory=True)
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), str(case_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lies inside the data root" in err[0] and case_dir.name in err[0]
    assert sorted(path.name for path in out.iterdir()) == [case_dir.name]


def test_out_holding_someone_elses_files_is_refused(data, checkpoint, tmp_path, capsys):
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "config.json").write_text('{"mine": 1}')
    (out / "volumes.csv").write_text("patient,volume\nA,1\n")
    case = next(data.glob("*Cirrus/*")) / "oct.mhd"
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), str(case)]) == 2
    assert "--out holds a config.json and a volumes.csv that predict.py did not write" in capsys.readouterr().err
    assert (out / "config.json").read_text() == '{"mine": 1}'


def test_nifti_format_probabilities_and_label_tables(data, checkpoint, predicted, tmp_path, capsys):
    out = tmp_path / "pred"
    shutil.copytree(predicted, out)  # segmentation.mhd of every case, made before without probabilities
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--format", "nii.gz",
                         "--save-probabilities", str(data)]) == 0
    assert "3 case(s) segmented, 0 already done" in capsys.readouterr().out  # nii.gz files were missing
    for folder in sorted(path.parent for path in data.glob("*/*/oct.mhd")):
        volume, geometry = read_volume(folder / "oct.mhd")
        case_dir = out / folder.name
        names = {path.name for path in case_dir.iterdir() if path.is_file()}
        assert names == {"segmentation.nii.gz", "probability_IRF.nii.gz", "probability_SRF.nii.gz",
                         "probability_PED.nii.gz", MARKER_FILE}  # the .mhd of the earlier run removed
        labels, out_geometry = read_volume(case_dir / "segmentation.nii.gz")
        expected, _ = read_volume(predicted / folder.name / config.SEGMENTATION_FILE)
        np.testing.assert_array_equal(labels, expected)  # the same model: the same labels in another format
        np.testing.assert_allclose(out_geometry.spacing_mm, geometry.spacing_mm, rtol=1e-6)
        np.testing.assert_allclose(out_geometry.origin_mm, geometry.origin_mm, atol=1e-6)
        np.testing.assert_allclose(out_geometry.direction, ROTATED, atol=1e-6)
        probabilities = {}
        for fluid, code in config.FLUIDS.items():
            probabilities[code], probability_geometry = read_volume(case_dir / f"probability_{fluid}.nii.gz")
            assert probabilities[code].dtype == np.uint8 and probabilities[code].shape == volume.shape
            np.testing.assert_allclose(probability_geometry.spacing_mm, geometry.spacing_mm, rtol=1e-6)
        # where a fluid is the arg-max its probability is at least that of every other fluid (rounding: 1 step)
        for code, probability in probabilities.items():
            where = labels == code
            for other in probabilities.values():
                assert np.all(probability[where].astype(int) >= other[where].astype(int) - 1)
    assert (out / config.ITKSNAP_LABELS_FILE).read_text() == label_tables.itksnap_label_description(config.FLUIDS)
    assert (out / config.SLICER_COLOURS_FILE).read_text() == label_tables.slicer_colour_table(config.FLUIDS)

    # a rerun with the same outputs skips every case; without probabilities too (they are extra)
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--format", "nii.gz", str(data)]) == 0
    assert "0 case(s) segmented, 3 already done" in capsys.readouterr().out
    # back to .mhd: redone, and the NIfTI files and stale probabilities go
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), str(data)]) == 0
    assert {path.name for path in (out / "TRAIN001").iterdir() if path.is_file()} == {
        "segmentation.mhd", "segmentation.raw", MARKER_FILE}


def test_an_unknown_format_is_a_usage_error(data, capsys):
    with pytest.raises(SystemExit) as exit_info:
        predict.main(["--format", "nrrd", str(data)])
    assert exit_info.value.code == 2 and "invalid choice: 'nrrd'" in capsys.readouterr().err


def test_report_per_case_and_an_index_that_opens_from_disk(data, checkpoint, predicted, tmp_path, capsys):
    out = tmp_path / "pred"
    shutil.copytree(predicted, out)
    segmentation = out / "TRAIN001" / config.SEGMENTATION_FILE
    before = segmentation.stat().st_mtime_ns
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--report", str(data)]) == 0
    assert "0 case(s) segmented, 3 already done" in capsys.readouterr().out  # drawn from the saved labels
    assert segmentation.stat().st_mtime_ns == before
    for case in ("TRAIN001", "TRAIN002", "TRAIN003"):
        with Image.open(out / case / config.REPORT_PNG) as image:
            assert image.format == "PNG"
    links = check_html(out / config.REPORT_HTML)
    images = {link for link in links if not link.startswith("#")}
    assert images == {f"TRAIN00{n}/{config.REPORT_PNG}" for n in (1, 2, 3)}


def test_vendor_files_in_and_a_truncated_one_fails_alone(checkpoint, tmp_path, capsys):
    """A Heidelberg .vol is segmented with the spacing its header holds; a truncated Cirrus .img beside it fails in
    one line naming it, and the .vol's case is still done (exit 1)."""
    from vendor_factory import write_img, write_vol

    rng = np.random.default_rng(7)
    inputs = tmp_path / "exports"
    inputs.mkdir()
    volume = tiny_volume("Spectralis", rng)
    volume = (volume >> 8).astype(np.uint8) if volume.dtype == np.uint16 else volume
    vol = write_vol(inputs / "patient7.vol", volume, (0.0114, 0.0039, 0.12))
    img = write_img(inputs / "broken.img", volume[:2, :, :])
    img.write_bytes(img.read_bytes()[:-5])
    out = tmp_path / "out"
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set",
                         "CIRRUS_IMG_SPACING_MM=(0.012,0.002,0.047)", str(vol), str(img)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(img) in errors[0]
    labels, geometry = read_volume(out / "patient7" / config.SEGMENTATION_FILE)
    assert labels.shape == volume.shape
    np.testing.assert_allclose(geometry.spacing_mm, (0.0114, 0.0039, 0.12))
    table = pd.read_csv(out / config.VOLUMES_CSV)
    assert list(table["case"]) == ["patient7"] and list(table["vendor"]) == ["Spectralis"]
    assert list(table["laterality"]) == ["R"]  # write_vol's eye OD: quadrants also named nasal / temporal
    assert table["IRF_inner_nasal_mm3"].notna().all()


def test_two_processes_share_the_cases_and_rank_0_writes_the_table(data, checkpoint, tmp_path):
    import socket
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]

    def torchrun() -> subprocess.CompletedProcess:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                   str(repo / "predict.py"), "--checkpoint", str(checkpoint), "--out", str(out), "--set",
                   "DEVICE=cpu", str(data)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    out = tmp_path / "pred"
    result = torchrun()
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("3 case(s) segmented, 0 already done, 0 failed") == 1  # rank 0's summary only
    assert "2 processes" in result.stdout
    # each rank prints "[i/n] CASE (...)" per case; the two ranks' lines may interleave within one line of output
    segmented = re.findall(r"\[\d+/\d+\] (\w+) \(", result.stdout)
    assert sorted(segmented) == ["TRAIN001", "TRAIN002", "TRAIN003"]  # every case once, none twice
    table = pd.read_csv(out / config.VOLUMES_CSV, dtype={"case": str})
    assert table["case"].tolist() == ["TRAIN001", "TRAIN002", "TRAIN003"]
    rerun = torchrun()
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "0 case(s) segmented, 3 already done" in rerun.stdout


def test_checkpoint_of_another_architecture_or_without_config_is_one_line(data, checkpoint, tmp_path, capsys):
    state = torch.load(checkpoint, weights_only=True)
    other = {**state, "model_args": {**state["model_args"], "classes": 3}}  # another class count
    save_checkpoint(tmp_path / "other.pt", other)
    assert predict.main(["--checkpoint", str(tmp_path / "other.pt"), "--out", str(tmp_path / "a"), str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tmp_path / 'other.pt'}: the checkpoint's weights do not fit")
    bare = {key: value for key, value in state.items() if key != "config"}
    save_checkpoint(tmp_path / "bare.pt", bare)
    assert predict.main(["--checkpoint", str(tmp_path / "bare.pt"), "--out", str(tmp_path / "b"), str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the checkpoint holds no config" in err[0] and str(tmp_path / "bare.pt") in err[0]


def _second_checkpoint(checkpoint, tmp_path, seed=1, **changes):
    """Another model beside ``checkpoint``: new random weights, the same settings unless ``changes`` says."""
    torch.manual_seed(seed)
    saved = torch.load(checkpoint, weights_only=False)
    path = tmp_path / "runs" / f"other{seed}" / "best.pt"
    save_checkpoint(path, {**saved, "model_state": build_unet(UNET).state_dict(),
                           "config": {**saved["config"], **changes}})
    return path


def test_several_checkpoints_segment_as_an_ensemble_of_their_probabilities(data, checkpoint, tmp_path, capsys):
    other = _second_checkpoint(checkpoint, tmp_path)
    runs = {}
    for name, checkpoints in (("a", [checkpoint]), ("b", [other]), ("ab", [checkpoint, other])):
        out = tmp_path / name
        assert predict.main(["--checkpoint", *map(str, checkpoints), "--out", str(out), "--save-probabilities",
                             str(data)]) == 0
        runs[name] = out
    assert "(ensemble)" in capsys.readouterr().out
    marker = json.loads(next(runs["ab"].glob(f"*/{MARKER_FILE}")).read_text())
    assert marker["checkpoint"] == [str(checkpoint.resolve()), str(other.resolve())] and len(marker["epoch"]) == 2
    for case_dir in runs["ab"].glob(f"*/{MARKER_FILE}"):
        case = case_dir.parent.name
        for fluid in config.FLUIDS:
            name = config.PROBABILITY_FILE.format(fluid=fluid)
            mean = (read_volume(runs["a"] / case / name)[0].astype(float)
                    + read_volume(runs["b"] / case / name)[0].astype(float)) / 2
            assert np.abs(read_volume(runs["ab"] / case / name)[0] - mean).max() <= 1.0  # uint8 rounding
    # a rerun with the members in the same order skips every case
    assert predict.main(["--checkpoint", str(checkpoint), str(other), "--out", str(runs["ab"]), str(data)]) == 0
    assert f"0 case(s) segmented, {len(TINY_SPECS)} already done" in capsys.readouterr().out


def test_an_ensemble_of_models_preparing_their_input_otherwise_is_refused(data, checkpoint, tmp_path, capsys):
    other = _second_checkpoint(checkpoint, tmp_path, MEDIAN_INPLANE=OTHER_MEDIAN)
    assert predict.main(["--checkpoint", str(checkpoint), str(other), "--out", str(tmp_path / "out"),
                         str(data)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {other}: MEDIAN_INPLANE={OTHER_MEDIAN}, but {checkpoint} has {config.MEDIAN_INPLANE}; "
                   f"the models of an ensemble must prepare their input alike")
    assert not (tmp_path / "out").exists()


def test_blank_columns_are_never_fluid(data, checkpoint, tmp_path):
    """A volume whose left quarter of A-scans is blank (0) keeps no fluid there with BLANK_COLUMNS_BACKGROUND."""
    root = tmp_path / "blank"
    source = next(data.glob("*Spectralis/*/oct.mhd"))
    volume, geometry = read_volume(source)
    volume = volume.copy()
    width = volume.shape[2]
    volume[:, :, : width // 4] = 0
    write_volume(root / "Spectralis" / "BLANK" / "oct.mhd", volume, geometry)
    labels = {}
    for blank in (False, True):
        out = tmp_path / f"out{blank}"
        assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set", "PREDICT_REGION=all",
                             "--set", f"BLANK_COLUMNS_BACKGROUND={blank}", "--save-probabilities", str(root)]) == 0
        labels[blank] = read_volume(out / "BLANK" / config.SEGMENTATION_FILE)[0]
    assert labels[False][:, :, : width // 4].any()  # the random network marks fluid there ...
    assert not labels[True][:, :, : width // 4].any()  # ... and not with the setting
    assert np.array_equal(labels[True][:, :, width // 4:], labels[False][:, :, width // 4:])


def test_inputs_right_after_the_checkpoints_are_inputs(data, checkpoint, tmp_path, capsys):
    args = predict.parse_args(["--checkpoint", str(checkpoint), str(checkpoint), str(data), str(tmp_path)])
    assert args.checkpoint == [checkpoint, checkpoint] and args.inputs == [data, tmp_path]
    assert predict.parse_args(["--checkpoint", str(checkpoint), str(data)]).inputs == [data]
    with pytest.raises(SystemExit):
        predict.parse_args(["--checkpoint", str(checkpoint)])
    assert "the following arguments are required: INPUT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        predict.parse_args(["--checkpoint", str(data)])
    assert f"--checkpoint {data}: expected a checkpoint file ending in .pt or .pth" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    ("empty", "cannot load the checkpoint"),
    ("truncated", "cannot load the checkpoint"),
    ("garbage", "cannot load the checkpoint"),
    ("nan_weights", "holds NaN or infinite values"),
    ("bad_reference", "histogram_reference is not a histogram reference"),
    ("short_counts", "histogram_reference is not a histogram reference"),
])
def test_a_damaged_checkpoint_is_one_line_and_no_case_is_marked_done(data, checkpoint, tmp_path, capsys, damage,
                                                                       message):
    damaged = tmp_path / "damaged.pt"
    if damage in ("empty", "truncated", "garbage"):
        whole = checkpoint.read_bytes()
        damaged.write_bytes({"empty": b"", "truncated": whole[:len(whole) // 2],
                             "garbage": bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8))}[damage])
    else:
        saved = torch.load(checkpoint, weights_only=True)
        if damage == "nan_weights":
            state = dict(saved["model_state"])
            name = next(key for key, value in state.items() if value.is_floating_point())
            state[name] = torch.full_like(state[name], float("nan"))
            saved["model_state"] = state
        else:
            saved["histogram_reference"] = ("nonsense" if damage == "bad_reference"
                                            else {"path": "x.mhd", "counts": [1.0] * 10})
        save_checkpoint(damaged, saved)
    out = tmp_path / "out"
    assert predict.main(["--checkpoint", str(damaged), "--out", str(out), str(data)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {damaged}: ") and message in err[0]
    assert not list(out.rglob(MARKER_FILE)) if out.exists() else True


def test_a_full_disk_fails_the_cases_in_one_line_each_and_the_rerun_completes(data, checkpoint, predicted, tmp_path,
                                                                                capsys, monkeypatch):
    """SimpleITK runs out of space half way through each label volume: no file under its final name, no case
    done; once there is space again the rerun writes what an uninterrupted run writes."""
    import utils.io.mhd_io

    real_write = utils.io.mhd_io.sitk.WriteImage

    def full_disk(image, name, *args, **kwargs):
        real_write(image, name, *args, **kwargs)
        for written in utils.io.mhd_io.volume_files(name):  # what a writer leaves when the space runs out
            with open(written, "r+b") as file:
                file.truncate(max(1, os.path.getsize(written) // 2))
        raise RuntimeError(f"Exception thrown in SimpleITK ImageFileWriter_Execute: x.cxx:1\nITK ERROR: "
                           f"MetaImageIO(0x5f00): File cannot be written: {name}\nReason: No space left on device")

    out = tmp_path / "pred"
    monkeypatch.setattr(utils.io.mhd_io.sitk, "WriteImage", full_disk)
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--overlays", "2", str(data)]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3 and all("No space left on device" in line and "is the disk full" in line
                                    and "Traceback" not in line for line in errors)
    assert not list(out.rglob(MARKER_FILE)) and not list(out.rglob(config.SEGMENTATION_FILE))
    monkeypatch.setattr(utils.io.mhd_io.sitk, "WriteImage", real_write)
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--overlays", "2", str(data)]) == 0
    for case in ("TRAIN001", "TRAIN002", "TRAIN003"):
        assert np.array_equal(read_volume(out / case / config.SEGMENTATION_FILE)[0],
                              read_volume(predicted / case / config.SEGMENTATION_FILE)[0])
    assert not [path for path in out.rglob("*") if ".tmp" in path.name]


# Runs predict.py and SIGKILLs itself half way through writing its second volume file (the second case's labels).
KILLED_MID_VOLUME = """
import os, signal, sys
import predict
import utils.io.mhd_io
real_write, calls = utils.io.mhd_io.sitk.WriteImage, []

def killed_on_the_second_file(image, name, *args, **kwargs):
    calls.append(name)
    real_write(image, name, *args, **kwargs)
    if len(calls) == 2:
        for written in utils.io.mhd_io.volume_files(name):
            with open(written, "r+b") as file:
                file.truncate(max(1, os.path.getsize(written) // 2))
        os.kill(os.getpid(), signal.SIGKILL)

utils.io.mhd_io.sitk.WriteImage = killed_on_the_second_file
sys.exit(predict.main(sys.argv[1:]))
"""


@pytest.mark.skipif(os.name == "nt", reason="no SIGKILL")
def test_a_run_killed_mid_volume_reruns_to_the_outputs_of_an_uninterrupted_run(data, checkpoint, predicted,
                                                                                  tmp_path):
    out = tmp_path / "pred"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--overlays", "2", "--set", "MIXED_PRECISION=False",
            str(data)]
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_VOLUME, *args], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert killed.returncode == -9, killed.stderr[-2000:]
    # killed inside the second case: the first is done, the second has no file under its final name
    assert [path.parent.name for path in out.rglob(MARKER_FILE)] == ["TRAIN001"]
    assert not (out / "TRAIN002" / config.SEGMENTATION_FILE).exists()
    assert predict.main(args) == 0
    for case in ("TRAIN001", "TRAIN002", "TRAIN003"):
        assert np.array_equal(read_volume(out / case / config.SEGMENTATION_FILE)[0],
                              read_volume(predicted / case / config.SEGMENTATION_FILE)[0])
    assert pd.read_csv(out / config.VOLUMES_CSV).equals(pd.read_csv(predicted / config.VOLUMES_CSV))
    assert not [path for path in out.rglob("*") if ".tmp" in path.name]
