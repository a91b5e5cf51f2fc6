"""The named choices of utils/configuration.py's CHOICES: each has one registry in the module that implements it,
mapping exactly those names to their implementations (the names are checked once, when the config loads; a
registry only dispatches)."""

import pytest

from utils.configuration import CHOICES
from utils.model import input_scale, networks
from utils.predict import band, inference
from utils.prepare import preprocessing
from utils.train import data_pipeline, loop, losses, optimizers, patch_sampling, schedule

REGISTRIES = {
    "MODEL": networks.MODELS,
    "DISCRIMINATOR": networks.DISCRIMINATORS,
    "IMAGE_RESAMPLING": input_scale.IMAGE_ORDERS,
    "DEPTH_SCALE": input_scale.DEPTH_SCALES,
    "INPUT_CHANNELS": input_scale.CHANNEL_OFFSETS,
    "PATCH_CENTRES": patch_sampling.PATCH_CENTRES,
    "STRATIFY_BY": data_pipeline.STRATIFY_BY,
    "AUGMENT": data_pipeline.AUGMENT,
    "LOSS": losses.LOSSES,
    "LR_SCHEDULE": schedule.LR_SCHEDULES,
    "BEST_BY": loop.BEST_BY,
    "ADVERSARIAL_STEP": loop.ADVERSARIAL_STEPS,
    "OPTIMIZER": optimizers.OPTIMIZERS,
    "PREDICT_REGION": band.PREDICT_REGIONS,
    "UNPADDED_BORDER": inference.UNPADDED_BORDERS,
    "HISTOGRAM_ROUNDING": preprocessing.HISTOGRAM_ROUNDINGS,
}


def test_every_choice_but_the_device_has_a_registry():
    assert sorted(REGISTRIES) == sorted(name for name in CHOICES if name != "DEVICE")


@pytest.mark.parametrize("name", sorted(REGISTRIES))
def test_a_registry_maps_exactly_the_names_its_choice_allows(name):
    assert sorted(REGISTRIES[name]) == sorted(CHOICES[name])
