"""utils/predict/settings.py: the model's own settings, with only the local ones from config.py and --set."""

import pytest

import config
from utils.configuration import ConfigError, config_to_dict, load_config
from utils.predict.settings import InferenceSettings, PredictSettings, check_inference_settings, inference_config


def test_local_settings_apply_and_others_are_ignored_with_a_note():
    trained = load_config([f"MEDIAN_INPLANE={config.MEDIAN_INPLANE + 2}"])
    local = load_config([f"MEDIAN_INPLANE={config.MEDIAN_INPLANE}", "INFERENCE_BATCH_SIZE=3"])
    cfg, notes = inference_config({"config": config_to_dict(trained)}, local,
                                  ["MEDIAN_INPLANE", "INFERENCE_BATCH_SIZE", "MEDIAN_INPLANE"])
    assert cfg.MEDIAN_INPLANE == config.MEDIAN_INPLANE + 2 and cfg.INFERENCE_BATCH_SIZE == 3
    assert len(notes) == 1 and notes[0].startswith(f"--set MEDIAN_INPLANE={config.MEDIAN_INPLANE!r} ignored")


def test_predict_settings_are_read_once_from_the_effective_config():
    cfg = load_config(["PREDICT_REGION=all", "MIN_COMPONENT_MM3=0.5", "SEGMENTATION_FILE=labels.mha",
                       f"MEDIAN_INPLANE={config.MEDIAN_INPLANE + 2}"])
    settings = PredictSettings.from_config(cfg)
    assert settings.inference.predict_region == "all" and settings.min_component_mm3 == 0.5
    assert settings.segmentation_file == "labels.mha" and settings.preprocess.median_inplane == cfg.MEDIAN_INPLANE
    assert settings.by_name(["MIN_COMPONENT_MM3", "PREDICT_REGION"]) == {"MIN_COMPONENT_MM3": 0.5,
                                                                          "PREDICT_REGION": "all"}


@pytest.mark.parametrize("fields, setting", [
    ({"inference_batch_size": 0}, "INFERENCE_BATCH_SIZE"),
    ({"inference": InferenceSettings(inference_tile_shape=(100, 128))}, "INFERENCE_TILE_SHAPE"),
    ({"inference": InferenceSettings(presence_min_volume_mm3=-1.0)}, "PRESENCE_MIN_VOLUME_MM3"),
])
def test_inference_settings_that_cannot_work_are_a_config_error(fields, setting):
    check_inference_settings(PredictSettings(), 32)  # config.py's work
    with pytest.raises(ConfigError, match=setting):
        check_inference_settings(PredictSettings(**fields), 32)
