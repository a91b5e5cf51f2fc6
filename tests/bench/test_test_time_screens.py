"""bench/test_time_screens.py: batch norms adapted to the inputs, probabilities averaged by hand, and both screens
on a tiny bench/quality.py layout with a random U-Net."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import config
from bench.test_time_screens import adapted_copy, averaged_fluid, main, with_axial_scale
from utils.configuration import config_to_dict, load_config
from utils.io.mhd_io import Geometry
from utils.model.checkpoints import save_checkpoint
from utils.model.networks import build_unet
from volume_factory import write_case

UNET = {"encoder_name": "resnet18", "encoder_weights": None, "in_channels": 3, "classes": config.N_CLASSES}
# near the tiny volumes' rows: they stay small after depth scaling, which follows the header's spacing
TRAINING = ["SPECTRALIS_AXIAL_SPACING_MM=0.03", "DEPTH_SCALE='spacing'"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_adapted_copy_holds_the_mean_of_its_inputs_batch_statistics_and_the_model_is_unchanged():
    model = nn.Sequential(nn.BatchNorm2d(2)).eval()
    model[0].running_mean.fill_(5.0)
    batches = [torch.tensor([[[[1.0]], [[2.0]]], [[[3.0]], [[6.0]]]]),  # means (2, 4)
               torch.tensor([[[[4.0]], [[0.0]]], [[[8.0]], [[2.0]]]])]  # means (6, 1)

    def run(network):
        with torch.inference_mode():  # as predict.py's inference runs
            for batch in batches:
                network(batch)

    adapted = adapted_copy(model, run)
    assert not adapted.training and not adapted[0].training
    torch.testing.assert_close(adapted[0].running_mean, torch.tensor([4.0, 2.5]))  # (2 + 6) / 2, (4 + 1) / 2
    torch.testing.assert_close(model[0].running_mean, torch.tensor([5.0, 5.0]))
    with pytest.raises(ValueError, match="no batch norm"):
        adapted_copy(nn.Sequential(nn.Conv2d(2, 2, 1)), run)


def test_passes_are_averaged_and_the_background_is_one_minus_the_fluids():
    # one pixel per column: fluids IRF, SRF; 255 = probability 1
    first = {"IRF": np.array([[[204, 0, 102]]], np.uint8), "SRF": np.array([[[0, 51, 0]]], np.uint8)}
    second = {"IRF": np.array([[[0, 0, 51]]], np.uint8), "SRF": np.array([[[0, 204, 0]]], np.uint8)}
    # means: IRF 0.4, 0, 0.3; SRF 0, 0.5, 0; background 0.6, 0.5, 0.7 (the tie of the second column is not fluid)
    np.testing.assert_array_equal(averaged_fluid([first, second]), [[[False, False, False]]])
    np.testing.assert_array_equal(averaged_fluid([first]), [[[True, False, False]]])  # 0.8 against 0.2


def test_an_axial_scale_changes_the_depth_spacing_alone():
    geometry = Geometry((0.01, 0.004, 0.12), (1.0, 2.0, 3.0))
    scaled = with_axial_scale(geometry, 1.5)
    assert scaled.spacing_mm == pytest.approx((0.01, 0.006, 0.12))
    assert (scaled.origin_mm, scaled.direction) == (geometry.origin_mm, geometry.direction)


def quality_layout(root, training):
    """bench/quality.py's layout for one config, one seed, one fold: data/duke_dev with two Spectralis cases, the
    fold's random-weight checkpoint (trained with ``training``) and its pred/ folder naming its test case."""
    rng = np.random.default_rng(3)
    for case in ("DUKE01", "DUKE02"):
        write_case(root / "data" / "duke_dev" / "RETOUCH-TrainingSet-Spectralis" / case, "Spectralis", rng)
    run = root / "real" / "config" / "seed0"
    torch.manual_seed(0)
    save_checkpoint(run / "fold1" / "run" / "best.pt",
                    {"model_args": UNET, "model_state": build_unet(UNET).state_dict(), "epoch": 1,
                     "config": config_to_dict(load_config(training)), "metrics": {}})
    (run / "fold1" / "pred" / "DUKE02").mkdir(parents=True)
    return run


@pytest.mark.parametrize("screen, variants", [("adabn", ["as trained", "adapted"]),
                                              ("depth_scales", ["scale 1", "scales 0.92, 1, 1.08"])])
def test_each_screen_tables_its_variants_on_the_folds_test_cases(tmp_path, capsys, screen, variants):
    run = quality_layout(tmp_path, TRAINING)
    assert main([screen, str(run), "--set", "DEVICE='cpu'"]) == 0
    table = capsys.readouterr().out
    assert "| variant | Dice fold1 | pooled Dice |" in table
    assert "DUKE02 |" in table and "DUKE01" not in table  # the fold's test case alone
    for variant in variants:
        assert f"| {variant} | " in table


def test_a_case_that_cannot_be_read_is_one_line_and_the_status_is_1(tmp_path, capsys):
    run = quality_layout(tmp_path, TRAINING)
    raw = tmp_path / "data" / "duke_dev" / "RETOUCH-TrainingSet-Spectralis" / "DUKE02" / "oct.raw"
    raw.write_bytes(raw.read_bytes()[:100])  # cut short
    assert main(["adabn", str(run), "--set", "DEVICE='cpu'"]) == 1
    err = capsys.readouterr().err
    error = [line for line in err.splitlines() if line.startswith("error")]
    assert len(error) == 1 and "oct.raw" in error[0] and error[0].endswith("DUKE02 left out")
    assert "no fold with" not in err and "Traceback" not in err


def test_depth_scales_refuse_a_model_that_scales_by_its_height_table(tmp_path, capsys):
    run = quality_layout(tmp_path, ["SPECTRALIS_AXIAL_SPACING_MM=0.03", "DEPTH_SCALE='height_table'"])
    assert main(["depth_scales", str(run)]) == 2
    error = capsys.readouterr().err
    assert "best.pt: DEPTH_SCALE='height_table'" in error and "Traceback" not in error


def test_a_folder_without_runs_or_an_unknown_setting_fails_in_one_line(tmp_path, capsys):
    assert main(["adabn", str(tmp_path / "real" / "config" / "seed0")]) == 1
    assert "no fold with run/best.pt" in capsys.readouterr().err
    assert main(["adabn", str(tmp_path), "--set", "TTA_FLIPS=True"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --set: ") and "TTA_FLIPS" in error and "Traceback" not in error
