"""A model trained on one vendor's scans segments the others' (issue 23): prepare_data.py records a histogram
reference whenever it can, the checkpoint carries it, and predict.py can be given one for a checkpoint without."""

import json
import shutil

import numpy as np
import pytest

import config
import predict
import prepare_data
import train
from utils.io.mhd_io import read_volume
from vendor_factory import write_img

TRAIN_SETTINGS = ["EPOCHS=1", "BATCHES_PER_EPOCH=1", "BATCH_SIZE=2", "PATCH_SHAPE=(128, 96)", "PATCH_BORDER=8",
                  "VAL_BSCANS=2", "LOADER_WORKERS=0"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _one_vendor_model(prepared_work, tmp_path_factory, vendor):
    """A tiny model trained on the synthetic set's ``vendor`` cases alone: ``(checkpoint, prepare's output)``."""
    root = tmp_path_factory.mktemp(f"only_{vendor}")
    folder = f"RETOUCH-TrainingSet-{vendor}"
    shutil.copytree(prepared_work.parent / "data" / folder, root / "data" / folder)
    work = root / "work"
    assert prepare_data.main(["--data-root", str(root / "data"), "--work-dir", str(work), "--workers", "1"]) == 0
    run = root / "run"
    settings = [arg for item in TRAIN_SETTINGS for arg in ("--set", item)]
    assert train.main(["--work-dir", str(work), "--run-dir", str(run), *settings]) == 0
    return run / config.BEST_CHECKPOINT, work


@pytest.fixture(scope="module")
def spectralis_model(prepared_work, tmp_path_factory):
    return _one_vendor_model(prepared_work, tmp_path_factory, "Spectralis")


@pytest.fixture(scope="module")
def cirrus_model(prepared_work, tmp_path_factory):
    return _one_vendor_model(prepared_work, tmp_path_factory, "Cirrus")


def _case(prepared_work, vendor):
    """The first synthetic ``oct.mhd`` of ``vendor``."""
    return sorted((prepared_work.parent / "data").glob(f"RETOUCH-TrainingSet-{vendor}/*/oct.mhd"))[0]


def _checkpoint_reference(path):
    import torch
    return torch.load(path, map_location="cpu", weights_only=False)["histogram_reference"]


def test_spectralis_only_model_segments_a_cirrus_img_and_a_topcon_volume(prepared_work, spectralis_model, tmp_path):
    checkpoint, work = spectralis_model
    recorded = json.loads((work / config.HISTOGRAM_REFERENCE_JSON).read_text())
    assert recorded["vendor"] == "Spectralis" and "Spectralis" in recorded["path"]
    assert _checkpoint_reference(checkpoint)["counts"] == recorded["counts"]

    cirrus, _ = read_volume(_case(prepared_work, "Cirrus"))
    (tmp_path / "inputs").mkdir()
    img = write_img(tmp_path / "inputs" / "export_cube_z.img", cirrus)
    topcon = _case(prepared_work, "Topcon")
    out = tmp_path / "pred"
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(out), "--set",
                         f"CIRRUS_IMG_SHAPE=({cirrus.shape[1]},{cirrus.shape[2]})", "--set",
                         "CIRRUS_IMG_SPACING_MM=(0.012,0.002,0.047)", str(img), str(topcon)]) == 0
    labels, _ = read_volume(out / "export_cube_z" / config.SEGMENTATION_FILE)
    assert labels.shape == cirrus.shape
    assert read_volume(out / topcon.parent.name / config.SEGMENTATION_FILE)[0].shape == read_volume(topcon)[0].shape


def test_cirrus_only_data_is_matched_to_a_cirrus_scan_with_a_note(prepared_work, cirrus_model, tmp_path, capsys):
    checkpoint, work = cirrus_model
    recorded = json.loads((work / config.HISTOGRAM_REFERENCE_JSON).read_text())
    assert recorded["vendor"] == "Cirrus"
    assert json.loads((work / prepare_data.CONFIG_JSON).read_text())["HISTOGRAM_REFERENCE"] == recorded["path"]

    spectralis, topcon = _case(prepared_work, "Spectralis"), _case(prepared_work, "Topcon")
    assert predict.main(["--checkpoint", str(checkpoint), "--out", str(tmp_path / "pred"),
                         str(spectralis), str(topcon)]) == 0
    err = capsys.readouterr().err
    assert "histogram reference is a Cirrus volume" in err and "Spectralis volumes" in err


def test_prepare_says_in_one_line_what_a_data_set_without_spectralis_means(prepared_work, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(prepared_work.parent / "data" / "RETOUCH-TrainingSet-Topcon", data / "RETOUCH-TrainingSet-Topcon")
    assert prepare_data.main(["--data-root", str(data), "--work-dir", str(tmp_path / "work"), "--workers", "1",
                              "preprocess"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "no Spectralis" in line]
    assert len(notes) == 1
    assert "another intensity scale" in notes[0] and "set HISTOGRAM_REFERENCE to a Spectralis oct.mhd" in notes[0]


def test_a_checkpoint_without_reference_takes_one_from_set(prepared_work, spectralis_model, tmp_path, capsys):
    import torch
    checkpoint, _ = spectralis_model
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    reference_path = saved["histogram_reference"]["path"]
    saved["histogram_reference"] = None  # as prepare_data.py made it before recording it always
    old = tmp_path / "old.pt"
    torch.save(saved, old)
    cirrus, out = _case(prepared_work, "Cirrus"), tmp_path / "pred"

    assert predict.main(["--checkpoint", str(old), "--out", str(out), str(cirrus)]) == 1
    err = capsys.readouterr().err
    assert "holds no histogram reference; give one with --set HISTOGRAM_REFERENCE=" in err
    assert len(err.strip().splitlines()) == 1

    assert predict.main(["--checkpoint", str(old), "--out", str(out), "--set", f"HISTOGRAM_REFERENCE={reference_path}",
                         str(cirrus)]) == 0
    captured = capsys.readouterr()
    assert "1 case(s) segmented" in captured.out and "ignored" not in captured.err
    supplied = read_volume(out / cirrus.parent.name / config.SEGMENTATION_FILE)[0]
    # the same model with the reference in its checkpoint segments the case alike
    saved["histogram_reference"] = _checkpoint_reference(checkpoint)
    torch.save(saved, tmp_path / "with.pt")
    assert predict.main(["--checkpoint", str(tmp_path / "with.pt"), "--out", str(tmp_path / "pred2"),
                         str(cirrus)]) == 0
    assert np.array_equal(read_volume(tmp_path / "pred2" / cirrus.parent.name / config.SEGMENTATION_FILE)[0], supplied)

    with pytest.raises(SystemExit) as refused:  # a file setting naming no file: a usage error, before any work
        predict.main(["--checkpoint", str(old), "--out", str(out), "--set", f"HISTOGRAM_REFERENCE={tmp_path}/none.mhd",
                      str(cirrus)])
    assert refused.value.code == 2
    assert "none.mhd': no such file" in capsys.readouterr().err
