import argparse
import importlib
import json
import re
import shlex
import types
from pathlib import Path

import pytest

import config
from utils.configuration import (CHOICES, ConfigError, add_config_arguments, apply_overrides, check_settings,
                                 config_from_dict, config_to_dict, load_config, save_config)
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
    ("ETDRS_DIAMETERS_MM=(3.0, 1.0, 6.0)",
     "ETDRS_DIAMETERS_MM=(3.0, 1.0, 6.0): expected three increasing diameters in mm, "
     "e.g. (1.0, 3.0, 6.0)"),
    ("FOVEA_SEARCH_RADIUS_MM=0", "FOVEA_SEARCH_RADIUS_MM=0.0: expected a radius in mm > 0"),
])
def test_values_that_cannot_work_are_rejected_before_any_work(override, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}; set it in config.py or with --set "):
        load_config([override])


@pytest.mark.parametrize("name", sorted(CHOICES))
def test_every_named_choice_is_checked_once_at_load_with_the_nearest_name_suggested(name):
    first = CHOICES[name][0]
    with pytest.raises(ConfigError, match=f"^{name}='{first}x': expected one of {re.escape(', '.join(CHOICES[name]))}"
                                          f"; did you mean '{first}'"):
        load_config([f"{name}={first}x"])
    for option in CHOICES[name]:
        assert getattr(load_config([f"{name}={option}"]), name) == option


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
    cfg = load_config(["ENTROPY_THRESHOLD=0.02", "PATCH_SHAPE=(128, 96)"])
    save_config(cfg, tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["ENTROPY_THRESHOLD"] == 0.02
    restored = config_from_dict(saved)
    assert restored.PATCH_SHAPE == (128, 96) and restored.VENDORS == cfg.VENDORS
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
    found = re.search(r"`--preset improved` is the same as these `--set` items \(as a shell takes them\): `([^`]+)` for "
                      r"training and `([^`]+)` for `predict.py`", " ".join(readme.split()))
    assert found, "README: the sentence spelling out --preset improved is missing"
    train_items, predict_items = shlex.split(found.group(1)), shlex.split(found.group(2))
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
    assert restored.HISTOGRAM_ROUNDING == "round"  # matched intensities were rounded before the setting existed
    assert config_from_dict({}).DEPTH_SCALE == config.DEPTH_SCALE  # nothing saved: config.py as it is
    assert config_from_dict(config_to_dict(load_config([]))).DEPTH_SCALE == "height_table"
    assert config_from_dict(config_to_dict(load_config([]))).HISTOGRAM_ROUNDING == "truncate"


# ----------------------------------------------------------------------------------------------------------------
# Values that pass the type check but name no known thing, or cannot work: refused at load time
# ----------------------------------------------------------------------------------------------------------------
VENDOR_NAMES = "expected vendor names among Cirrus, Spectralis, Topcon"


@pytest.mark.parametrize("override, message", [
    ("VENDORS=('Heidelberg',)", f"VENDORS=('Heidelberg',): {VENDOR_NAMES}; 'Heidelberg' is none of them"),
    ("HISTOGRAM_MATCH_VENDORS=('Zeiss',)", f"HISTOGRAM_MATCH_VENDORS=('Zeiss',): {VENDOR_NAMES}; 'Zeiss' is none"),
    ("MEDIAN_VENDORS=('Topcn',)", f"MEDIAN_VENDORS=('Topcn',): {VENDOR_NAMES}; 'Topcn' is none of them "
                                  f"(did you mean 'Topcon'?)"),
    ("MEDIAN_SLICES_VENDORS=Cirrus,topcon", f"MEDIAN_SLICES_VENDORS=('Cirrus', 'topcon'): {VENDOR_NAMES}; 'topcon' "
                                            f"is none of them (did you mean 'Topcon'?)"),
    ("VENDORS=()", "VENDORS=(): expected at least one vendor name of Cirrus, Spectralis, Topcon"),
    ("MEDIAN_SLICES=2", "MEDIAN_SLICES=2: expected an odd number of B-scans >= 1 (1: off)"),
    ("MEDIAN_INPLANE=0", "MEDIAN_INPLANE=0: expected an odd size in pixels >= 1 (1: off)"),
    ("PNG_COMPRESS_LEVEL=12", "PNG_COMPRESS_LEVEL=12: expected a zlib level in 0..9"),
    ("CLOSING_DISK_RADIUS=-5", "CLOSING_DISK_RADIUS=-5: expected a radius in pixels >= 0"),
    ("ENTROPY_DISK_RADIUS=0", "ENTROPY_DISK_RADIUS=0: expected a radius in pixels >= 1"),
    ("ENTROPY_THRESHOLD=1.0", "ENTROPY_THRESHOLD=1.0: expected a share of the B-scan's largest entropy in [0, 1)"),
    ("SPECTRALIS_AXIAL_SPACING_MM=0.0", "SPECTRALIS_AXIAL_SPACING_MM=0.0: expected a spacing in mm > 0"),
    ("PATCH_SHAPE=(256, 0)", "PATCH_SHAPE=(256, 0): expected a patch size (height, width) in pixels"),
    ("PATCH_BORDER=64", "PATCH_BORDER=64: expected a number of pixels >= 0 that leaves pixels inside "
                        "PATCH_SHAPE=(256, 128) (2 x PATCH_BORDER < 128)"),
    ("PATCHES_PER_BSCAN=0", "PATCHES_PER_BSCAN=0: expected an integer >= 1"),
    ("SEED=-1", "SEED=-1: expected a seed >= 0"),
    ("SPLIT_SEED=-3", "SPLIT_SEED=-3: expected a seed >= 0"),
    ("ADAM_BETAS=(0.5, 1.0)", "ADAM_BETAS=(0.5, 1.0): expected two betas in [0, 1)"),
    ("INTENSITY_GAMMA=0.0", "INTENSITY_GAMMA=0.0: expected a gamma >= 1"),
    ("LOADER_WORKERS=-2", "LOADER_WORKERS=-2: expected a number of processes >= 0, or -1 (auto)"),
    ("INFERENCE_BATCH_SIZE=0", "INFERENCE_BATCH_SIZE=0: expected an integer >= 1"),
    ("SLICE_IMAGE_FOLDER=", "SLICE_IMAGE_FOLDER='': expected a file or folder name, not empty"),
    ("SPLIT_SLICES_CSV=slices.csv", "SPLIT_SLICES_CSV='slices.csv': expected a file name with the placeholder "
                                    "{split} (and no other), e.g. slices_{split}.csv"),
    ("SPLIT_SLICES_CSV=slices_{split}_{fold}.csv", "SPLIT_SLICES_CSV='slices_{split}_{fold}.csv': expected a file "
                                                   "name with the placeholder {split} (and no other)"),
    ("PROBABILITY_FILE=probability.mhd", "PROBABILITY_FILE='probability.mhd': expected a file name with the "
                                         "placeholder {fluid}"),
    ("SPLIT_FRACTIONS={'train': 0.7, 'valid': 0.3}", "SPLIT_FRACTIONS={'train': 0.7, 'valid': 0.3}: expected shares "
                                                     "of train, val and test (a split left out: 0), each >= 0, "
                                                     "summing to 1"),
    ("SPLIT_FRACTIONS={'train': 0.7, 'val': 0.15, 'test': 0.5}", "SPLIT_FRACTIONS={'train': 0.7, 'val': 0.15, "
                                                                 "'test': 0.5}: expected shares"),
    ("SPLIT_FRACTIONS={'train': 1.2, 'val': -0.2}", "SPLIT_FRACTIONS={'train': 1.2, 'val': -0.2}: expected shares"),
    ("FLUIDS={'IRF': 1, 'XYZ': 9}", "FLUIDS={'IRF': 1, 'XYZ': 9}: expected fluid names among IRF, SRF, PED with "
                                    "their label codes, e.g. {'IRF': 1, 'SRF': 2, 'PED': 3}"),
    ("FLUIDS={'IRF': 2}", "FLUIDS={'IRF': 2}: expected fluid names among IRF, SRF, PED with their label codes"),
    ("FLUIDS={}", "FLUIDS={}: expected fluid names"),
    ("IRF=2", "IRF=2: expected a label code in [0, N_CLASSES=4) that no other of BACKGROUND, IRF, SRF, PED has"),
    ("PED=4", "PED=4: expected a label code in [0, N_CLASSES=4)"),
    ("IGNORE_LABEL=3", "IGNORE_LABEL=3: expected a code in [N_CLASSES=4, 255]"),
    ("DEMO_OVERRIDES=('VAL_BSCAN=48',)", "DEMO_OVERRIDES=('VAL_BSCAN=48',): expected NAME=VALUE items of config.py's "
                                         "settings"),
])
def test_values_that_name_no_known_thing_or_cannot_work_are_refused_in_one_line(override, message):
    name = override.partition("=")[0]
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}") as raised:
        load_config([override])
    assert str(raised.value).endswith(f"; set it in config.py or with --set {name}=...")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("name", sorted(name for name in vars(config) if name.endswith("VENDORS")))
def test_every_vendor_setting_takes_known_vendor_names_only(name):
    with pytest.raises(ConfigError, match=f"^{name}=\\('Cirrus', 'Heidelberg'\\): {VENDOR_NAMES}"):
        load_config([f"{name}=Cirrus,Heidelberg"])
    assert getattr(load_config([f"{name}=Spectralis"]), name) == ("Spectralis",)


@pytest.mark.parametrize("name", sorted(name for name in vars(config) if name.endswith("_PROB")))
def test_every_probability_lies_in_0_to_1(name):
    augment = ["AUGMENT=replace"]  # SCALE_PROB's augmentation; the others' too
    for value in (5, -0.1):
        with pytest.raises(ConfigError, match=f"^{name}={float(value)}: expected a probability in \\[0, 1\\]"):
            load_config([*augment, f"{name}={value}"])
    assert [getattr(load_config([*augment, f"{name}={value}"]), name) for value in (0, 1)] == [0.0, 1.0]


@pytest.mark.parametrize("override", [
    "MEDIAN_SLICES=1", "MEDIAN_SLICES=5", "MEDIAN_INPLANE=1", "PNG_COMPRESS_LEVEL=0", "PNG_COMPRESS_LEVEL=9",
    "CLOSING_DISK_RADIUS=0", "ENTROPY_THRESHOLD=0.0", "SEED=0", "LOADER_WORKERS=-1", "PATCH_BORDER=63",
    "PATCH_BORDER=0", "VENDORS=Cirrus", "HISTOGRAM_MATCH_VENDORS=()", "MEDIAN_SLICES_VENDORS=('Topcon',)",
    "SPLIT_FRACTIONS={'train': 0.75, 'val': 0.25, 'test': 0.0}",  # the original's split (docs/fidelity.md)
    "SPLIT_FRACTIONS={'train': 0.85, 'val': 0.0, 'test': 0.15}",  # the README's
    "SPLIT_FRACTIONS={'train': 1.0}", "SPLIT_SLICES_CSV=split_{split}.csv", "PROBABILITY_FILE=p_{fluid}.nii.gz",
    "FLUIDS={'IRF': 1}", "IGNORE_LABEL=4", "ENCODER=resnet999",  # rmit_unet (the default) uses no encoder
])
def test_values_at_the_edge_of_the_rules_are_accepted(override):
    load_config([override])


def test_an_smp_encoder_must_be_one_smp_knows():
    with pytest.raises(ConfigError, match="^ENCODER='resnet999': expected an encoder segmentation_models_pytorch knows"
                                          r" \(its encoders.get_encoder_names\(\)\), e.g. resnet18; 'resnet999' is "
                                          "none of them"):
        load_config(["MODEL=smp_unet", "ENCODER=resnet999"])
    assert load_config(["MODEL=smp_unet", "ENCODER=resnet34"]).ENCODER == "resnet34"


@pytest.mark.parametrize("override, other", [("SLICE_IMAGE_FOLDER=reference", "SLICE_MASK_FOLDER='reference'"),
                                             ("SLICE_ROI_FOLDER=oct/", "SLICE_ROI_FOLDER='oct/'"),
                                             ("LAST_CHECKPOINT=best.pt", "LAST_CHECKPOINT='best.pt'"),
                                             ("SPLIT_CSV=slice_index.csv", "SPLIT_CSV='slice_index.csv'")])
def test_names_that_share_a_folder_must_differ(override, other):
    with pytest.raises(ConfigError, match=f"{re.escape(other)}: expected different names: both lie in one folder"):
        load_config([override])


def test_an_input_file_setting_must_name_an_existing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "none" / "oct.mhd"
    with pytest.raises(ConfigError, match=f"^HISTOGRAM_REFERENCE='{re.escape(str(missing))}': no such file; expected "
                                          f"a Spectralis oct.mhd"):
        load_config([f"HISTOGRAM_REFERENCE={missing}"])
    reference = tmp_path / "data" / "Spectralis" / "oct.mhd"
    reference.parent.mkdir(parents=True)
    reference.write_text("")
    load_config([f"HISTOGRAM_REFERENCE={reference}"])  # absolute
    load_config(["HISTOGRAM_REFERENCE=data/Spectralis/oct.mhd"])  # relative to the working folder
    load_config([f"DATA_ROOT={tmp_path / 'data'}", "HISTOGRAM_REFERENCE=Spectralis/oct.mhd"])  # ... or to DATA_ROOT
    with pytest.raises(ConfigError, match="no such file"):
        load_config([f"DATA_ROOT={tmp_path / 'other'}", "HISTOGRAM_REFERENCE=Spectralis/oct.mhd"])
    assert load_config(["HISTOGRAM_REFERENCE="]).HISTOGRAM_REFERENCE == ""  # unset: the first Spectralis case
    # a checkpoint's config names files of the machine it was made on: only what --set gives on top is checked
    saved = {**vars(load_config([])), "HISTOGRAM_REFERENCE": str(missing)}
    assert load_config([], base=saved).HISTOGRAM_REFERENCE == str(missing)
    with pytest.raises(ConfigError, match="no such file"):
        load_config([f"HISTOGRAM_REFERENCE={missing}"], base=saved)


def test_the_demo_and_the_quality_benchmark_configurations_pass_the_checks(monkeypatch):
    demo_length = [f"EPOCHS={config.DEMO_EPOCHS}", f"TRAIN_BUDGET_MINUTES={config.DEMO_TRAIN_MINUTES}"]
    load_config([*config.PRESETS[config.DEMO_PRESET], *demo_length, *config.DEMO_OVERRIDES])
    load_config([*demo_length, *config.AUTHORS_DEMO_OVERRIDES])
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "bench"))
    quality = importlib.import_module("quality")
    # the benchmark's demo config is the demo's training at --epochs DEMO_EPOCHS
    demo = quality.with_settings(list(config.PRESETS[config.DEMO_PRESET]), *config.DEMO_OVERRIDES)
    assert sorted(item for item in quality.CONFIGS["demo_improved_e4b20"]["train"]) == sorted(
        item for item in demo if not item.startswith("EPOCHS=") and not item.startswith("PREDICT_REGION="))
    for name, measured in quality.CONFIGS.items():
        train = quality.CONFIGS[quality.trained_as(name)]["train"]
        for overrides in (measured.get("prepare", []),
                          [*train, *quality.SMOKE_TRAIN, f"EPOCHS={quality.DEFAULT_EPOCHS}", "SEED=1"],
                          measured["predict"]):
            try:
                load_config(list(overrides))
            except ConfigError as error:
                pytest.fail(f"bench/quality.py config {name}: {error}")


@pytest.mark.parametrize("override", ["VENDORS=('Heidelberg',)", "ROTATE_PROB=5", "SPLIT_SLICES_CSV=slices.csv",
                                      "HISTOGRAM_REFERENCE=/nonexistent/oct.mhd"])
def test_the_scripts_refuse_such_a_value_with_status_2_before_any_work(tmp_path, capsys, override):
    import prepare_data
    import train
    work = tmp_path / "work"
    assert prepare_data.main(["--data-root", str(tmp_path / "none"), "--work-dir", str(work), "--set", override]) == 2
    assert train.main(["--work-dir", str(work), "--set", override]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"error: {override.partition('=')[0]}=") for line in lines), lines
    assert not work.exists()


def test_the_models_whose_encoder_is_checked_are_those_that_take_one():
    from utils.configuration import ENCODER_MODELS
    from utils.model.networks import MODELS
    assert sorted(ENCODER_MODELS) == sorted(name for name, network in MODELS.items() if network.takes_encoder)


def test_deep_supervision_is_allowed_for_the_models_whose_network_reads_it():
    from utils.configuration import DEEP_SUPERVISION_MODELS
    from utils.model.networks import MODELS
    assert sorted(DEEP_SUPERVISION_MODELS) == sorted(name for name, network in MODELS.items()
                                                     if "deep_supervision" in network.settings)
    with pytest.raises(ConfigError, match="^DEEP_SUPERVISION=True: expected False with MODEL='rmit_unet'"):
        load_config(["DEEP_SUPERVISION=True"])
    assert load_config(["MODEL=smp_unet", "DEEP_SUPERVISION=True"]).DEEP_SUPERVISION is True


def test_decoder_attention_is_allowed_for_the_models_whose_network_reads_it():
    from utils.configuration import DECODER_ATTENTION_MODELS
    from utils.model.networks import MODELS
    assert sorted(DECODER_ATTENTION_MODELS) == sorted(name for name, network in MODELS.items()
                                                      if "decoder_attention" in network.settings)
    with pytest.raises(ConfigError, match="^DECODER_ATTENTION='scse': expected '' with MODEL='rmit_unet'"):
        load_config(["DECODER_ATTENTION=scse"])
    assert load_config(["MODEL=smp_unet", "DECODER_ATTENTION=scse"]).DECODER_ATTENTION == "scse"
