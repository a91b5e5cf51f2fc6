import argparse
import importlib
import json
import re
import types
from pathlib import Path

import pytest

import config
from utils.configuration import (ConfigError, add_config_arguments, apply_overrides, check_settings, config_from_dict,
                                 config_to_dict, load_config, save_config)
from utils.predict.settings import INFERENCE_SETTINGS

BASE = {"EPOCHS": 10, "LEARNING_RATE": 2e-4, "PATCH_SHAPE": (256, 128), "ENCODER": "resnet18",
        "USE_BF16": True, "VENDORS": ("Cirrus", "Spectralis"), "SPLIT_FRACTIONS": {"train": 0.7}}


@pytest.mark.parametrize("override, name, expected", [
    ("EPOCHS=3", "EPOCHS", 3),
    ("LEARNING_RATE=1e-3", "LEARNING_RATE", 1e-3),
    ("LEARNING_RATE=1", "LEARNING_RATE", 1.0),
    ("PATCH_SHAPE=(128, 64)", "PATCH_SHAPE", (128, 64)),
    ("PATCH_SHAPE=[128,64]", "PATCH_SHAPE", (128, 64)),
    ("ENCODER=resnet34", "ENCODER", "resnet34"),
    ("USE_BF16=False", "USE_BF16", False),
    ("VENDORS=Cirrus,Topcon", "VENDORS", ("Cirrus", "Topcon")),
    ("SPLIT_FRACTIONS={'train': 1.0}", "SPLIT_FRACTIONS", {"train": 1.0}),
])
def test_override_is_typed(override, name, expected):
    result = apply_overrides(BASE, [override])
    assert result[name] == expected and type(result[name]) is type(expected)
    assert BASE["EPOCHS"] == 10  # the base is not changed


@pytest.mark.parametrize("override, message", [
    ("EPOCHS=3.5", "expected a int"),
    ("EPOCHS=many", "expected a int"),
    ("USE_BF16=1", "expected a bool"),
    ("PATCH_SHAPE=12", "expected a tuple"),
    ("EPOCH=3", "did you mean EPOCHS?"),
    ("learning_rate=0.1", "did you mean LEARNING_RATE?"),
    ("EPOCHS", "expected NAME=VALUE"),
])
def test_bad_override_is_rejected_with_a_hint(override, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        apply_overrides(BASE, [override])


def test_load_config_reads_config_py_and_applies_overrides():
    cfg = load_config(["EPOCHS=2"])
    assert cfg.EPOCHS == 2 and config.EPOCHS != 2  # the override, not config.py's value
    assert cfg.IRF == 1 and cfg.SRF == 2 and cfg.PED == 3 and cfg.N_CLASSES == 4
    assert cfg.PATCH_SHAPE == config.PATCH_SHAPE and cfg.FLUIDS == config.FLUIDS


def test_the_defaults_of_config_py_pass_the_checks():
    check_settings(load_config([]))


@pytest.mark.parametrize("override, message", [
    ("BATCH_SIZE=0", "BATCH_SIZE=0: expected an integer >= 1"),
    ("EPOCHS=0", "EPOCHS=0: expected an integer >= 1"),
    ("BATCHES_PER_EPOCH=-1", "BATCHES_PER_EPOCH=-1: expected an integer >= 0"),
    ("LEARNING_RATE=0", "LEARNING_RATE=0.0: expected a number > 0"),
    ("LEARNING_RATE=-1e-3", "LEARNING_RATE=-0.001: expected a number > 0"),
    ("DEVICE=gpu", "DEVICE='gpu': expected one of auto, cpu, cuda"),
    ("ETDRS_DIAMETERS_MM=(3.0, 1.0, 6.0)",
     "ETDRS_DIAMETERS_MM=(3.0, 1.0, 6.0): expected three increasing diameters in mm, "
     "e.g. (1.0, 3.0, 6.0)"),
    ("FOVEA_SEARCH_RADIUS_MM=0", "FOVEA_SEARCH_RADIUS_MM=0.0: expected a radius in mm > 0"),
])
def test_values_that_cannot_work_are_rejected_before_any_work(override, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}; set it in config.py or with --set "):
        load_config([override])


@pytest.mark.parametrize("name, value", [("BATCH_SIZE", 1), ("EPOCHS", 1), ("BATCHES_PER_EPOCH", 0),
                                         ("LEARNING_RATE", 1e-9), ("DEVICE", "cpu"), ("DEVICE", "cuda"),
                                         ("DEVICE", "auto")])
def test_values_at_the_edge_are_accepted(name, value):
    assert getattr(load_config([f"{name}={value}"]), name) == value


def test_check_settings_skips_what_a_config_lacks_and_rejects_wrong_types():
    check_settings(types.SimpleNamespace(EPOCHS=3))  # an old checkpoint's config may lack settings
    with pytest.raises(ConfigError, match="EPOCHS=None: expected an integer >= 1"):
        check_settings(types.SimpleNamespace(EPOCHS=None))  # a base dict is not type-checked
    with pytest.raises(ConfigError, match="BATCH_SIZE=0"):
        load_config([], base={**vars(load_config([])), "BATCH_SIZE": 0})


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(["ENTROPY_THRESHOLD=0.02", "PATCH_SHAPE=(128, 64)"])
    save_config(cfg, tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["ENTROPY_THRESHOLD"] == 0.02
    restored = config_from_dict(saved)
    assert restored.PATCH_SHAPE == (128, 64) and restored.VENDORS == cfg.VENDORS
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temporary file left behind


# ----------------------------------------------------------------------------------------------------------------
# --preset
# ----------------------------------------------------------------------------------------------------------------
def _parsed(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv", [["--preset", "improved", "--set", "LOSS=rmit"],
                                  ["--set", "LOSS=rmit", "--preset", "improved"]])
def test_a_preset_applies_first_and_the_command_lines_set_wins(argv):
    args = _parsed(argv)
    assert args.overrides == [*config.PRESETS["improved"], "LOSS=rmit"]
    assert args.preset_overrides == list(config.PRESETS["improved"])
    cfg = load_config(args.overrides)
    assert (cfg.MODEL, cfg.LOSS, cfg.PREDICT_REGION) == ("smp_unet", "rmit", "all")


def test_without_a_preset_only_the_set_items_apply():
    args = _parsed(["--set", "EPOCHS=3"])
    assert (args.overrides, args.preset_overrides) == (["EPOCHS=3"], [])


def test_an_unknown_preset_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        _parsed(["--preset", "best"])
    assert raised.value.code == 2 and "invalid choice: 'best'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(config.PRESETS))
def test_every_preset_is_a_valid_set_of_overrides(name):
    load_config(list(config.PRESETS[name]))


def test_the_presets_are_the_configurations_measured_in_the_quality_benchmark(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    quality = importlib.import_module("quality")
    assert sorted(quality.PRESET_CONFIGS) == sorted(config.PRESETS)
    for preset, name in quality.PRESET_CONFIGS.items():
        measured = quality.CONFIGS[name]
        assert sorted(config.PRESETS[preset]) == sorted(measured["train"] + measured["predict"]
                                                        + [f"EPOCHS={quality.DEFAULT_EPOCHS}"]), preset
        assert measured.get("no_validation") and not measured.get("prepare")  # as config.py's comment tells users


def test_the_readme_lists_the_improved_preset_as_config_py_defines_it():
    """The README spells the preset out for users who prefer --set; that copy must not drift from config.py."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    found = re.search(r"`--preset improved` is the same as these `--set` items: `([^`]+)` for training and `([^`]+)` "
                      r"for `predict.py`", " ".join(readme.split()))
    assert found, "README: the sentence spelling out --preset improved is missing"
    train_items, predict_items = found.group(1).split(), found.group(2).split()
    assert sorted(train_items + predict_items) == sorted(config.PRESETS["improved"])
    assert all(item.split("=")[0] in INFERENCE_SETTINGS for item in predict_items)


def test_a_config_saved_before_a_fidelity_setting_keeps_the_behaviour_it_was_made_with():
    from utils.configuration import EARLIER_BEHAVIOUR
    saved = config_to_dict(load_config([]))
    for name in EARLIER_BEHAVIOUR:
        del saved[name]
    restored = config_from_dict({**saved, "BATCH_SIZE": 8})
    assert (restored.DEPTH_SCALE, restored.BSCAN_SHUFFLE_BUFFER, restored.PATCH_SHUFFLE_BUFFER,
            restored.KEPT_PATCH_SHUFFLE_BUFFER, restored.DROP_PARTIAL_BATCH, restored.VAL_FRESH_PATCHES) == (
        "spacing", 0, 0, 32, False, False)
    assert config_from_dict({}).DEPTH_SCALE == config.DEPTH_SCALE  # nothing saved: config.py as it is
    assert config_from_dict(config_to_dict(load_config([]))).DEPTH_SCALE == "height_table"
