"""utils/predict/settings.py: the model's own settings, with only the local ones from config.py and --set."""

import config
from utils.configuration import config_to_dict, load_config
from utils.predict.settings import inference_config


def test_local_settings_apply_and_others_are_ignored_with_a_note():
    trained = load_config([f"MEDIAN_INPLANE={config.MEDIAN_INPLANE + 2}"])
    local = load_config([f"MEDIAN_INPLANE={config.MEDIAN_INPLANE}", "INFERENCE_BATCH_SIZE=3"])
    cfg, notes = inference_config({"config": config_to_dict(trained)}, local,
                                  ["MEDIAN_INPLANE", "INFERENCE_BATCH_SIZE", "MEDIAN_INPLANE"])
    assert cfg.MEDIAN_INPLANE == config.MEDIAN_INPLANE + 2 and cfg.INFERENCE_BATCH_SIZE == 3
    assert len(notes) == 1 and notes[0].startswith(f"--set MEDIAN_INPLANE={config.MEDIAN_INPLANE!r} ignored")
