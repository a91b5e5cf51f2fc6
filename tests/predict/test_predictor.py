"""utils/predict/predictor.py: the Python API segments as predict.py does, and the README's example runs."""

import ast
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import config
import predict
from utils.configuration import ConfigError, config_to_dict, load_config
from utils.io.mhd_io import VOLUME_FORMATS, Geometry, read_volume, write_volume
from utils.io.vendor_files import VendorFileSettings
from utils.io.tables import presence_column, volume_column
from utils.model.checkpoints import save_checkpoint
from utils.model.networks import build_unet
from utils.predict.outputs import probability_paths
from utils.predict.predictor import Predictor
from utils.prepare.preprocessing import histogram_reference
from volume_factory import TINY_SPECS, tiny_volume
from docs_examples import readme_example

UNET = {"encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3, "classes": config.N_CLASSES}
ROTATED = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # 90 degrees about z: not the identity
TRAINING = ["SPECTRALIS_AXIAL_SPACING_MM=0.03"]  # near the tiny volumes' rows: they stay small after depth scaling
OTHER_MEDIAN = config.MEDIAN_INPLANE + 2  # a preprocessing setting unlike the checkpoint's

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One case per vendor in the RETOUCH layout, each with its own origin and a rotated direction."""
    root = tmp_path_factory.mktemp("predictor") / "data"
    rng = np.random.default_rng(7)
    for number, vendor in enumerate(TINY_SPECS, 1):
        geometry = Geometry(spacing_mm=TINY_SPECS[vendor][2], origin_mm=(1.0, 2.0, float(number)), direction=ROTATED)
        write_volume(root / f"RETOUCH-TrainingSet-{vendor}" / f"TRAIN{number:03d}" / "oct.mhd",
                     tiny_volume(vendor, rng), geometry)
    return root


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory):
    """Two checkpoints of random U-Net weights (seeds 0 and 1) with the config and histogram reference train.py
    saves: ``work/runs/seed<k>/best.pt``."""
    cfg = load_config(TRAINING)
    reference = histogram_reference(next(data.glob("*Spectralis/*/oct.mhd")), VendorFileSettings())
    runs = tmp_path_factory.mktemp("work") / "runs"
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(runs / f"seed{seed}" / "best.pt")
        save_checkpoint(paths[-1], {"model_args": UNET, "model_state": build_unet(UNET).state_dict(), "epoch": 3,
                                    "config": config_to_dict(cfg), "metrics": {}, "histogram_reference": reference})
    return paths


@pytest.fixture(scope="module")
def predicted(data, checkpoints, tmp_path_factory):
    """predict.py's outputs for ``data`` with the first checkpoint, probabilities included."""
    out = tmp_path_factory.mktemp("out") / "pred"
    assert predict.main(["--checkpoint", str(checkpoints[0]), "--out", str(out), "--save-probabilities",
                         "--set", "DEVICE=cpu", str(data)]) == 0
    return out


@pytest.fixture(scope="module")
def predictor(checkpoints):
    return Predictor(checkpoints[0], DEVICE="cpu")


def saved_labels(out: Path, case: str) -> np.ndarray:
    return read_volume(out / case / config.SEGMENTATION_FILE)[0]


def test_files_and_arrays_segment_to_predict_pys_outputs(data, predicted, predictor):
    table = pd.read_csv(predicted / config.VOLUMES_CSV, dtype={"case": str}).set_index("case")
    fluid_voxels = 0
    for path in sorted(data.glob("*/*/oct.mhd")):
        case = path.parent.name
        result = predictor.segment(path, keep_probabilities=True)
        labels, geometry = read_volume(predicted / case / config.SEGMENTATION_FILE)
        assert result.labels.dtype == np.uint8 and np.array_equal(result.labels, labels)
        assert result.geometry == geometry and result.geometry.direction == ROTATED
        assert result.vendor == table.loc[case, "vendor"] and result.laterality == ""
        for fluid, saved in probability_paths(predicted / case, config.PROBABILITY_FILE, config.FLUIDS,
                                                 VOLUME_FORMATS[0]).items():
            assert np.array_equal(result.probabilities[fluid], read_volume(saved)[0])
            assert result.volumes_mm3[fluid] == pytest.approx(table.loc[case, volume_column(fluid)], rel=1e-9)
            assert result.presence[fluid] == pytest.approx(table.loc[case, presence_column(fluid)], rel=1e-9)
        volume, geometry = read_volume(path)
        from_array = predictor.segment(volume, geometry, vendor=result.vendor)
        assert np.array_equal(from_array.labels, labels) and from_array.probabilities is None
        assert from_array.volumes_mm3 == result.volumes_mm3
        fluid_voxels += np.count_nonzero(labels)
    assert fluid_voxels  # the random network labels some fluid: the volumes compared are not all background


def test_local_overrides_apply_and_model_settings_stay_the_checkpoints(data, checkpoints, tmp_path):
    overrides = {"DEVICE": "cpu", "PREDICT_REGION": "all", "MIN_COMPONENT_MM3": 0.001, "MEDIAN_INPLANE": OTHER_MEDIAN}
    with pytest.warns(UserWarning, match=f"MEDIAN_INPLANE={OTHER_MEDIAN} ignored"):
        predictor = Predictor(str(checkpoints[0]), **overrides)
    assert predictor.cfg.PREDICT_REGION == "all" and predictor.cfg.MIN_COMPONENT_MM3 == 0.001
    assert predictor.cfg.MEDIAN_INPLANE == config.MEDIAN_INPLANE  # the model's own preprocessing
    assert predictor.cfg.SPECTRALIS_AXIAL_SPACING_MM == 0.03
    assert len(predictor.notes) == 1
    out = tmp_path / "pred"
    sets = [option for name, value in overrides.items() for option in ("--set", f"{name}={value}")]
    assert predict.main(["--checkpoint", str(checkpoints[0]), "--out", str(out), *sets, str(data)]) == 0
    for path in sorted(data.glob("*/*/oct.mhd")):
        assert np.array_equal(predictor.segment(path).labels, saved_labels(out, path.parent.name))


def test_several_checkpoints_segment_as_predict_pys_ensemble(data, checkpoints, predicted, tmp_path):
    cirrus = next(data.glob("*Cirrus/*/oct.mhd"))
    out = tmp_path / "pred"
    assert predict.main(["--checkpoint", *map(str, checkpoints), "--out", str(out), "--set", "DEVICE=cpu",
                         str(cirrus)]) == 0
    labels = Predictor(checkpoints, DEVICE="cpu").segment(cirrus).labels
    assert np.array_equal(labels, saved_labels(out, cirrus.parent.name))
    assert not np.array_equal(labels, saved_labels(predicted, cirrus.parent.name))  # not the first member alone


def test_bad_inputs_are_refused_naming_what_was_expected(data, checkpoints, predictor):
    path = next(data.glob("*Spectralis/*/oct.mhd"))
    volume, geometry = read_volume(path)
    cases = [
        ((volume,), {}, ValueError, "needs its geometry and vendor"),
        ((volume, geometry), {}, ValueError, "needs its geometry and vendor"),
        ((volume, geometry), {"vendor": "Nidek"}, ValueError, "expected one of the model's VENDORS"),
        ((volume[0], geometry), {"vendor": "Spectralis"}, ValueError, r"expected \(z, y, x\)"),
        ((volume.astype(np.float32), geometry), {"vendor": "Spectralis"}, ValueError, "float32; expected uint8"),
        ((volume, Geometry(spacing_mm=(0.01, 0.0, 0.1))), {"vendor": "Spectralis"}, ValueError, "positive finite"),
        ((path, geometry), {}, ValueError, "holds its own geometry"),
        ((path.parent,), {}, FileNotFoundError, "no such file"),
        ((path.with_suffix(".raw"),), {}, ValueError, "not a MetaImage header"),
    ]
    for args, keywords, error, message in cases:
        with pytest.raises(error, match=message):
            predictor.segment(*args, **keywords)
    with pytest.raises(ConfigError, match="did you mean DEVICE"):
        Predictor(checkpoints[0], DEVCE="cpu")
    with pytest.raises(ConfigError, match="PREDICT_REGION"):
        Predictor(checkpoints[0], PREDICT_REGION="everywhere")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        Predictor(checkpoints[0].parent / "missing.pt")


def first_string_arguments(code: str) -> dict[str, str]:
    """Callee name (``Predictor``, ``segment``, ``write_volume``) -> the string literal of its first argument."""
    found = {}
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            found.setdefault(name, node.args[0].value)
    return found


def test_the_readme_example_runs(data, checkpoints, predicted, tmp_path, monkeypatch, capsys):
    code = readme_example("from utils.predict.predictor import Predictor")
    paths = first_string_arguments(code)
    assert {"Predictor", "segment", "write_volume"} <= set(paths), paths
    # the checkpoint and volume where the example expects them, relative to the folder it runs in
    monkeypatch.chdir(tmp_path)
    Path(paths["Predictor"]).parent.mkdir(parents=True)
    shutil.copy(checkpoints[0], paths["Predictor"])
    cirrus = next(data.glob("*Cirrus/*/oct.mhd"))
    shutil.copytree(cirrus.parent, Path(paths["segment"]).parent)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(config.FLUIDS)  # one line per fluid, with its volume
    assert all(line.startswith(fluid) and "mm³" in line for line, fluid in zip(printed, config.FLUIDS))
    labels, geometry = read_volume(paths["write_volume"])
    assert np.array_equal(labels, saved_labels(predicted, cirrus.parent.name))  # predict.py's labels
    assert geometry == read_volume(cirrus)[1]
