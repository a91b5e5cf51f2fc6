"""Loading config.py with ``--set NAME=VALUE`` overrides, and saving the effective config as JSON."""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import json
import math
import os
import types
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import config as default_config

from utils.errors import ConfigError  # noqa: F401  (re-exported: scripts import it from here)
from utils.io.files import atomic_write_text
from utils.io.tables import SPLITS
from utils.io.vendor_files import KNOWN_VENDORS


def default_settings() -> dict[str, Any]:
    """The upper-case constants of config.py, by name."""
    return {name: getattr(default_config, name) for name in dir(default_config) if name.isupper()}


def _parse_value(text: str) -> Any:
    """A Python literal (``3``, ``1e-3``, ``(256, 128)``, ``True``), else the text itself as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` converted to the type of ``default``, or ConfigError saying what was expected."""
    expected = type(default)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        return str(value)
    elif isinstance(default, (tuple, list)):
        if isinstance(value, (tuple, list)):
            return expected(value)
        if isinstance(value, str) and isinstance(default, tuple) and all(isinstance(v, str) for v in default):
            return tuple(v for v in value.split(",") if v)  # VENDORS=Cirrus,Topcon
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    elif default is None:
        return value
    raise ConfigError(f"--set {name}={value!r}: expected a {expected.__name__} like {default!r}, "
                      f"got a {type(value).__name__}")


def apply_overrides(settings: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns a copy of ``settings`` with each ``NAME=VALUE`` of ``overrides`` applied, type-checked.

    Raises:
        ConfigError: malformed override, unknown name (the nearest known name is suggested) or a value whose type
            does not match the constant in config.py.
    """
    result = dict(settings)
    for item in overrides:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--set {item!r}: expected NAME=VALUE, e.g. --set EPOCHS=10")
        if name not in settings:
            close = difflib.get_close_matches(name.upper(), list(settings), n=1)
            hint = f"; did you mean {close[0]}?" if close else "; see config.py for the names"
            raise ConfigError(f"--set {name}: config.py has no setting of that name{hint}")
        result[name] = _coerce(name, _parse_value(text.strip()), settings[name])
    return result


# Settings that name one of a few choices: their names, checked when a config loads (check_settings: a wrong name
# gets the nearest suggested). Each but DEVICE maps the names to implementations in one dict of the module that
# implements them (MODEL: utils/model/networks.py MODELS; PREDICT_REGION: utils/predict/band.py PREDICT_REGIONS; ...),
# which tests/test_choices.py ties to these names; DEVICE names a torch device (utils/model/runtime.py).
CHOICES: dict[str, tuple[str, ...]] = {
    "MODEL": ("rmit_unet", "smp_unet"), "LOSS": ("rmit", "balanced_ce_dice", "ce_dice", "ce_lovasz"),
    "PATCH_CENTRES": ("rmit", "stratified"), "LR_SCHEDULE": ("constant", "poly"),
    "STRATIFY_BY": ("vendor", "fluid", "none"), "AUGMENT": ("rmit", "replace"),
    "BEST_BY": ("val_loss", "dice_mean_fluid"), "PREDICT_REGION": ("band", "roi", "all"),
    "HISTOGRAM_ROUNDING": ("truncate", "round"), "DISCRIMINATOR": ("rmit", "strided"),
    "IMAGE_RESAMPLING": ("linear", "nearest"), "DEPTH_SCALE": ("height_table", "spacing"),
    "UNPADDED_BORDER": ("background", "padded"), "OPTIMIZER": ("adam", "sgd"),
    "ADVERSARIAL_STEP": ("discriminator_first", "separate"), "DEVICE": ("auto", "cpu", "cuda"),
    "INPUT_CHANNELS": ("neighbours", "repeat"),
}
DEVICES = CHOICES["DEVICE"]
# The MODEL names whose backbone ENCODER chooses (utils/model/networks.py's Network.takes_encoder; kept here so that
# loading a config imports no network code; tests/test_configuration.py ties the two)
ENCODER_MODELS = ("smp_unet",)
DEEP_SUPERVISION_MODELS = ("smp_unet",)  # the MODEL names whose Network reads deep_supervision
DECODER_ATTENTION_MODELS = ("smp_unet",)  # ... and decoder_attention
NORMALIZATION_MODELS = ("smp_unet",)  # ... and normalization
FULL_RESOLUTION_MODELS = ("smp_unet",)  # ... and full_resolution_channels
# The LOSS names with a plain cross-entropy that CE_BOUNDARY_WEIGHT weights (utils/train/losses.py; tied by a test)
BOUNDARY_WEIGHTED_LOSSES = ("ce_dice", "ce_lovasz")
FLUID_LABELS = ("IRF", "SRF", "PED")  # the label-code settings whose names FLUIDS uses
_LABEL_CODES = ("BACKGROUND",) + FLUID_LABELS


@functools.lru_cache(maxsize=None)
def _smp_encoders() -> tuple[str, ...]:
    """The encoder names segmentation_models_pytorch knows (imported only where an smp network is configured: the
    import takes seconds; nothing is downloaded)."""
    import segmentation_models_pytorch as smp
    return tuple(smp.encoders.get_encoder_names())


# Settings that name known things, one name or a tuple of names: name -> (the known names for a config, or None
# where the setting is not used; what is expected). An unknown name gets the nearest known one suggested.
_KNOWN_NAMES: dict[str, tuple[Callable[[Any], Sequence[str] | None], str]] = {
    **{name: (lambda cfg: KNOWN_VENDORS, f"vendor names among {', '.join(KNOWN_VENDORS)}")
       for name in default_settings() if name.endswith("VENDORS")},
    "DEMO_PRESET": (lambda cfg: ("", *default_config.PRESETS), "a name in config.py's PRESETS, or '' (none)"),
    "ENCODER": (lambda cfg: _smp_encoders() if getattr(cfg, "MODEL", None) in ENCODER_MODELS else None,
                "an encoder segmentation_models_pytorch knows (its encoders.get_encoder_names()), e.g. resnet18"),
}


def _spacing_or_unset(value, length: int) -> bool:
    """``()`` (unset) or ``length`` positive finite numbers."""
    return len(value) == 0 or (len(value) == length and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value))


def _sizes(value, length: int = 2) -> bool:
    """``length`` integers >= 1 (a shape in pixels, or channel counts)."""
    return len(value) == length and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)


def _name(value) -> bool:
    """A file or folder name that is not empty (nor only blanks)."""
    return isinstance(value, str) and value.strip() != ""


def _template(value, field: str) -> bool:
    """A file name holding the placeholder ``{field}`` and no other."""
    try:
        return _name(value) and f"{{{field}}}" in value and bool(value.format(**{field: "x"}))
    except (KeyError, IndexError, ValueError):  # another placeholder, or a stray brace
        return False


def _split_fractions(value) -> bool:
    """Shares of the splits of utils/io/tables.py (a split left out gets none): numbers >= 0 that sum to 1."""
    return (isinstance(value, dict) and set(value) <= set(SPLITS)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in value.values())
            and math.isclose(sum(value.values()), 1.0, abs_tol=1e-6))


def _overrides_that_apply(value) -> bool:
    """``NAME=VALUE`` items that :func:`apply_overrides` accepts (typed, known names)."""
    try:
        apply_overrides(default_settings(), list(value))
    except ConfigError:
        return False
    return True


_PROBABILITY = (lambda value: 0 <= value <= 1, "a probability in [0, 1]")
_COUNT = (lambda value: value >= 1, "an integer >= 1")
_SEED = (lambda value: value >= 0, "a seed >= 0 (numpy's generators take no negative seed)")
_SHUFFLE_BUFFER = (lambda value: value >= 0, "an integer >= 0 (0 or 1: no shuffle)")
# Settings whose type check passes but whose value cannot work, or silently does nothing, checked before any work
# (check_settings). Only the settings a config holds are checked (a checkpoint's config may predate some).
_VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "BATCH_SIZE": _COUNT,
    "EPOCHS": _COUNT,
    "BATCHES_PER_EPOCH": (lambda value: value >= 0, "an integer >= 0"),
    "BSCAN_SHUFFLE_BUFFER": _SHUFFLE_BUFFER,
    "PATCH_SHUFFLE_BUFFER": _SHUFFLE_BUFFER,
    "KEPT_PATCH_SHUFFLE_BUFFER": _SHUFFLE_BUFFER,
    "BN_REESTIMATE_BATCHES": (lambda value: value >= 0, "an integer >= 0 (0: off)"),
    "VAL_BSCANS": (lambda value: value >= 0, "an integer >= 0 (0: every validation B-scan)"),
    "EMA_DECAY": (lambda value: 0 <= value < 1, "a number in [0, 1) (0: off)"),
    "DISCRIMINATOR_L2_WEIGHT": (lambda value: value >= 0, "a number >= 0"),
    "LEARNING_RATE": (lambda value: value > 0, "a number > 0"),
    "PRESENCE_GATE": (lambda value: 0 <= value <= 1, "a number in [0, 1]"),
    "BN_MOMENTUM": (lambda value: 0 < value <= 1, "a momentum in (0, 1]"),
    "MIN_COMPONENT_MM3": (lambda value: value >= 0, "a number of mm³ >= 0"),
    "FLUID_CLOSING_MM": (lambda value: value >= 0, "a radius in mm >= 0 (0: off)"),
    "FLUID_THRESHOLD": (lambda value: 0 <= value < 1, "a probability in [0, 1) (0: off, arg-max labels)"),
    "ETDRS_DIAMETERS_MM": (lambda value: len(value) == 3 and 0 < value[0] < value[1] < value[2],
                           "three increasing diameters in mm, e.g. (1.0, 3.0, 6.0)"),
    "FOVEA_SEARCH_RADIUS_MM": (lambda value: value > 0, "a radius in mm > 0"),
    "FOVEA_MIN_DEPTH_MM": (lambda value: value >= 0, "a depth in mm >= 0"),
    "TRAIN_BUDGET_MINUTES": (lambda value: value >= 0, "a number of minutes >= 0 (0: no budget)"),
    "CIRRUS_IMG_SHAPE": (_sizes, "a B-scan size (depth, width) in pixels, e.g. (1024, 512)"),
    "CIRRUS_IMG_SPACING_MM": (lambda value: _spacing_or_unset(value, 3),
                              "() or 3 spacings (x, y, z) in mm > 0, e.g. (0.0117, 0.00195, 0.047)"),
    "TOPCON_SPACING_MM": (lambda value: _spacing_or_unset(value, 3),
                          "() or 3 spacings (x, y, z) in mm > 0, e.g. (0.0117, 0.0026, 0.047)"),
    "E2E_SPACING_XZ_MM": (lambda value: _spacing_or_unset(value, 2),
                          "() or 2 spacings (x, z) in mm > 0, e.g. (0.0114, 0.12)"),
    # names: an empty one writes into the folder above, beside (or over) other outputs
    **{name: (_name, "a file or folder name, not empty") for name in (
        "SLICES_SUBDIR", "SLICE_IMAGE_FOLDER", "SLICE_MASK_FOLDER", "SLICE_ROI_FOLDER", "HISTOGRAM_REFERENCE_JSON",
        "SLICE_INDEX_CSV", "SPLIT_CSV", "RUNS_SUBDIR", "BEST_CHECKPOINT", "LAST_CHECKPOINT", "CONFIG_JSON",
        "PREDICTIONS_SUBDIR", "SEGMENTATION_FILE", "VOLUMES_CSV", "ITKSNAP_LABELS_FILE", "SLICER_COLOURS_FILE",
        "REPORT_PNG", "REPORT_HTML")},
    # one file per split or fluid: without the placeholder they would all overwrite one file
    "SPLIT_SLICES_CSV": (lambda value: _template(value, "split"),
                         "a file name with the placeholder {split} (and no other), e.g. slices_{split}.csv"),
    "SNAPSHOT_CHECKPOINT": (lambda value: _template(value, "cycle"),
                            "a file name with the placeholder {cycle} (and no other), e.g. snapshot{cycle}.pt"),
    "PROBABILITY_FILE": (lambda value: _template(value, "fluid"),
                         "a file name with the placeholder {fluid} (and no other), e.g. probability_{fluid}.mhd"),
    "N_CLASSES": (lambda value: value >= 2, "a number of classes >= 2 (background and the fluids: RETOUCH's 4)"),
    "VENDORS": (lambda value: len(value) >= 1, f"at least one vendor name of {', '.join(KNOWN_VENDORS)}"),
    "MEDIAN_SLICES": (lambda value: value >= 1 and value % 2 == 1, "an odd number of B-scans >= 1 (1: off)"),
    "MEDIAN_INPLANE": (lambda value: value >= 1 and value % 2 == 1, "an odd size in pixels >= 1 (1: off)"),
    "PNG_COMPRESS_LEVEL": (lambda value: 0 <= value <= 9, "a zlib level in 0..9"),
    "SPLIT_FRACTIONS": (_split_fractions, "shares of train, val and test (a split left out: 0), each >= 0, "
                                          "summing to 1, e.g. {'train': 0.7, 'val': 0.15, 'test': 0.15}"),
    "SPLIT_SEED": _SEED,
    "SEED": _SEED,
    "SYNTHETIC_CASES_PER_VENDOR": _COUNT,
    "ENTROPY_DISK_RADIUS": (lambda value: value >= 1, "a radius in pixels >= 1"),
    "ENTROPY_THRESHOLD": (lambda value: 0 <= value < 1, "a share of the B-scan's largest entropy in [0, 1)"),
    "CLOSING_DISK_RADIUS": (lambda value: value >= 0, "a radius in pixels >= 0 (0: no closing)"),
    "PATCH_SHAPE": (_sizes, "a patch size (height, width) in pixels, e.g. (256, 128)"),
    "DECODER_ATTENTION": (lambda value: value in ("", "scse"), "'' (smp's plain decoder) or 'scse'"),
    "NORMALIZATION": (lambda value: value in ("batch", "instance"), "'batch' (smp's batch norms) or 'instance'"),
    "FULL_RESOLUTION_CHANNELS": (lambda value: value >= 0, "a channel count >= 0 (0: no full-resolution skip)"),
    "DECODER_CHANNELS": (lambda value: _sizes(value, 5),
                         "five channel counts >= 1, deepest decoder block first, e.g. (256, 128, 64, 32, 16)"),
    "SPECTRALIS_AXIAL_SPACING_MM": (lambda value: math.isfinite(value) and value > 0, "a spacing in mm > 0"),
    "PATCHES_PER_BSCAN": _COUNT,
    "RANDOM_PATCH_SHARE": (lambda value: value >= 0, "a share of PATCHES_PER_BSCAN >= 0"),
    "PATCH_JITTER_PX": (lambda value: value >= 0, "a number of pixels >= 0"),
    "PATCH_JITTER": (lambda value: value >= 0, "a share of the patch height >= 0"),
    "L2_WEIGHT": (lambda value: value >= 0, "a number >= 0 (0: none)"),
    "ADAM_BETAS": (lambda value: len(value) == 2 and all(0 <= beta < 1 for beta in value),
                   "two betas in [0, 1), e.g. (0.5, 0.999)"),
    "SGD_MOMENTUM": (lambda value: 0 <= value < 1, "a momentum in [0, 1)"),
    "WEIGHT_DECAY": (lambda value: value >= 0, "a number >= 0"),
    "CE_WEIGHT": (lambda value: value >= 0, "a weight >= 0"),
    "DICE_WEIGHT": (lambda value: value >= 0, "a weight >= 0"),
    "LOVASZ_WEIGHT": (lambda value: value >= 0, "a weight >= 0"),
    "CE_BOUNDARY_WEIGHT": (lambda value: value >= 0, "an extra weight >= 0 (0: off)"),
    "SNAPSHOT_CYCLES": (lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                        "a whole number of cycles >= 1 (1: off)"),
    "CE_BOUNDARY_RADIUS_PX": (lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                              "a whole number of pixels >= 1"),
    "ADVERSARIAL_WEIGHT": (lambda value: value >= 0, "a weight >= 0"),
    "DISCRIMINATOR_LEARNING_RATE": (lambda value: value > 0, "a number > 0"),
    **{name: _PROBABILITY for name in default_settings() if name.endswith("_PROB")},
    "ROTATE_MAX_DEGREES": (lambda value: 0 <= value <= 180, "an angle in degrees in [0, 180]"),
    "SCALE_RANGE": (lambda value: len(value) == 2 and 0 < value[0] <= value[1],
                    "two magnifications (low, high), 0 < low <= high, e.g. (0.8, 1.25)"),
    "TTA_ROTATE_DEGREES": (lambda value: isinstance(value, tuple) and len(set(value)) == len(value) and all(
                               isinstance(angle, (int, float)) and not isinstance(angle, bool)
                               and 0 < abs(angle) <= 45 for angle in value),
                           "a tuple of distinct angles in degrees, each nonzero and within +-45, e.g. (-5.0, 5.0)"),
    "ELASTIC_MAX_PX": (lambda value: value >= 0, "a displacement in pixels >= 0"),
    "ELASTIC_GRID_PX": (lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 2,
                        "a control-point spacing in whole pixels >= 2"),
    "INTENSITY_GAMMA": (lambda value: value >= 1, "a gamma >= 1 (1: no change)"),
    "INTENSITY_CONTRAST": (lambda value: 0 <= value <= 1, "a share in [0, 1]"),
    "SPECKLE_LOOKS": (lambda value: value > 0, "a number of looks > 0"),
    "LOADER_WORKERS": (lambda value: value >= -1, "a number of processes >= 0, or -1 (auto)"),
    "DEMO_EPOCHS": (lambda value: value >= 1, "an integer >= 1"),
    "DEMO_TRAIN_MINUTES": (lambda value: value >= 0, "a number of minutes >= 0 (0: no budget)"),
    **{name: (_overrides_that_apply, "NAME=VALUE items of config.py's settings, e.g. ('VAL_BSCANS=48',)")
       for name in ("DEMO_OVERRIDES", "AUTHORS_DEMO_OVERRIDES")},
    "INFERENCE_BATCH_SIZE": (lambda value: value >= 1, "an integer >= 1"),
    "INFERENCE_TILE_SHAPE": (_sizes, "a tile size (height, width) in pixels, e.g. (1024, 1024)"),
    "INFERENCE_TILE_OVERLAP": (lambda value: value >= 0, "a number of pixels >= 0"),
    "PRESENCE_MIN_VOLUME_MM3": (lambda value: value >= 0, "a number of mm³ >= 0"),
    "SPACING_RTOL": (lambda value: value >= 0, "a relative tolerance >= 0"),
}
# Settings whose possible values depend on others: name -> (test of the value and the config, what is expected for
# the config). A rule that reads a setting the config lacks is skipped.
_RELATED_RULES: dict[str, tuple[Callable[[Any, Any], bool], Callable[[Any], str]]] = {
    **{name: (lambda value, cfg: 0 <= value < cfg.N_CLASSES
              and [getattr(cfg, label) for label in _LABEL_CODES].count(value) == 1,
              lambda cfg: f"a label code in [0, N_CLASSES={cfg.N_CLASSES}) that no other of "
                          f"{', '.join(_LABEL_CODES)} has (RETOUCH's reference.mhd: 0, 1, 2, 3)")
       for name in _LABEL_CODES},
    "FLUIDS": (lambda value, cfg: isinstance(value, dict) and len(value) >= 1 and all(
                   name in FLUID_LABELS and code == getattr(cfg, name) for name, code in value.items()),
               lambda cfg: f"fluid names among {', '.join(FLUID_LABELS)} with their label codes, e.g. "
                           f"{ {name: getattr(cfg, name) for name in FLUID_LABELS} }"),
    "IGNORE_LABEL": (lambda value, cfg: cfg.N_CLASSES <= value <= 255,
                     lambda cfg: f"a code in [N_CLASSES={cfg.N_CLASSES}, 255] (no class has it; masks are uint8)"),
    "DEEP_SUPERVISION": (lambda value, cfg: not value or cfg.MODEL in DEEP_SUPERVISION_MODELS,
                         lambda cfg: f"False with MODEL={cfg.MODEL!r}: deep supervision needs "
                                     f"{' or '.join(DEEP_SUPERVISION_MODELS)} (heads on its decoder blocks)"),
    "DECODER_ATTENTION": (lambda value, cfg: not value or cfg.MODEL in DECODER_ATTENTION_MODELS,
                          lambda cfg: f"'' with MODEL={cfg.MODEL!r}: decoder attention needs "
                                      f"{' or '.join(DECODER_ATTENTION_MODELS)} (smp's decoder blocks)"),
    "NORMALIZATION": (lambda value, cfg: value == "batch" or cfg.MODEL in NORMALIZATION_MODELS,
                      lambda cfg: f"'batch' with MODEL={cfg.MODEL!r}: another normalisation needs "
                                  f"{' or '.join(NORMALIZATION_MODELS)} (rmit_unet keeps the authors' batch norms)"),
    "FULL_RESOLUTION_CHANNELS": (
        lambda value, cfg: not value or (cfg.MODEL in FULL_RESOLUTION_MODELS and not cfg.DEEP_SUPERVISION),
        lambda cfg: f"0 with MODEL={cfg.MODEL!r} and DEEP_SUPERVISION={cfg.DEEP_SUPERVISION!r}: the full-resolution "
                    f"skip needs {' or '.join(FULL_RESOLUTION_MODELS)} without deep supervision"),
    "SCALE_PROB": (lambda value, cfg: value == 0 or cfg.AUGMENT == "replace",
                   lambda cfg: f"0 with AUGMENT={cfg.AUGMENT!r} (the scaling is part of AUGMENT='replace')"),
    "CE_BOUNDARY_WEIGHT": (lambda value, cfg: value == 0 or cfg.LOSS in BOUNDARY_WEIGHTED_LOSSES,
                           lambda cfg: f"0 with LOSS={cfg.LOSS!r}: the outline weighting is of the plain "
                                       f"cross-entropy of {' or '.join(BOUNDARY_WEIGHTED_LOSSES)}"),
    "TTA_ROTATE_DEGREES": (lambda value, cfg: not value or cfg.PREDICT_REGION != "band",
                           lambda cfg: "() with PREDICT_REGION='band': a rotated band shows black wedges where the "
                                       "retina goes on; segment whole B-scans (PREDICT_REGION='all' or 'roi')"),
    "SNAPSHOT_CYCLES": (lambda value, cfg: value == 1 or (cfg.LR_SCHEDULE == "poly" and cfg.EPOCHS % value == 0
                                                          and not cfg.TRAIN_BUDGET_MINUTES),
                        lambda cfg: f"1, or a divisor of EPOCHS={cfg.EPOCHS} with LR_SCHEDULE='poly' and no "
                                    f"TRAIN_BUDGET_MINUTES (the cycles restart the poly decay, epoch by epoch)"),
    "ELASTIC_PROB": (lambda value, cfg: value == 0 or cfg.AUGMENT == "replace",
                     lambda cfg: f"0 with AUGMENT={cfg.AUGMENT!r} (the deformation is part of AUGMENT='replace')"),
    "PATCH_BORDER": (lambda value, cfg: 0 <= value and 2 * value < min(cfg.PATCH_SHAPE),
                     lambda cfg: f"a number of pixels >= 0 that leaves pixels inside PATCH_SHAPE="
                                 f"{tuple(cfg.PATCH_SHAPE)} (2 x PATCH_BORDER < {min(cfg.PATCH_SHAPE)})"),
}
# Names of files and folders that share a folder (a case's slice folders; a run folder; WORK_DIR; the predictions
# folder): two equal names would overwrite each other's files.
_DISTINCT_NAMES = (
    ("SLICE_IMAGE_FOLDER", "SLICE_MASK_FOLDER", "SLICE_ROI_FOLDER"),
    ("BEST_CHECKPOINT", "LAST_CHECKPOINT", "CONFIG_JSON"),
    ("SLICES_SUBDIR", "HISTOGRAM_REFERENCE_JSON", "SLICE_INDEX_CSV", "SPLIT_CSV", "CONFIG_JSON", "RUNS_SUBDIR",
     "PREDICTIONS_SUBDIR"),
    ("VOLUMES_CSV", "ITKSNAP_LABELS_FILE", "SLICER_COLOURS_FILE", "REPORT_HTML", "CONFIG_JSON"),
)
# Settings that name an input file: name -> what is expected. Checked where the value comes from config.py or --set
# (load_config), not in a checkpoint's config, which names files of the machine it was made on.
_INPUT_FILES = {"HISTOGRAM_REFERENCE": "a Spectralis oct.mhd (absolute, or relative to the working folder or "
                                       "DATA_ROOT), or empty (the first Spectralis case)"}


def _refused(name: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{name}={value!r}: expected {expected}; set it in config.py or with --set {name}=...")


def _nearest(text: Any, options: Sequence[str]) -> str:
    """``" (did you mean 'X'?)"`` for the option nearest ``text``, or ``""``."""
    nearest = difflib.get_close_matches(str(text), list(options), n=1)
    return f" (did you mean {nearest[0]!r}?)" if nearest else ""


def check_settings(cfg: types.SimpleNamespace) -> None:
    """Checks the values that pass the type check but cannot work, or name no known thing, before any work starts.

    Args:
        cfg: a config (as :func:`load_config` returns); settings it lacks are not checked.

    Raises:
        ConfigError: the first bad setting, with what it holds and what is expected, e.g.
            ``BATCH_SIZE=0: expected an integer >= 1; set it in config.py or with --set BATCH_SIZE=...``.
    """
    for name, options in CHOICES.items():
        value = getattr(cfg, name, options[0])
        if value not in options:
            nearest = difflib.get_close_matches(str(value), options, n=1)
            raise ConfigError(f"{name}={value!r}: expected one of {', '.join(options)}"
                              + (f"; did you mean {nearest[0]!r}?" if nearest else ""))
    for name, (works, expected) in _VALUE_RULES.items():
        if not hasattr(cfg, name):
            continue
        try:
            good = works(getattr(cfg, name))
        except TypeError:  # a base dict (a checkpoint's config) is not type-checked against config.py
            good = False
        if not good:
            raise _refused(name, getattr(cfg, name), expected)
    for name, (known_names, expected) in _KNOWN_NAMES.items():
        known = known_names(cfg) if hasattr(cfg, name) else None
        if known is None:
            continue
        value = getattr(cfg, name)
        unknown = [item for item in (value if isinstance(value, (tuple, list)) else (value,)) if item not in known]
        if unknown:
            raise _refused(name, value, f"{expected}; {unknown[0]!r} is none of them{_nearest(unknown[0], known)}")
    for name, (works, expected) in _RELATED_RULES.items():
        if not hasattr(cfg, name):
            continue
        try:
            good = works(getattr(cfg, name), cfg)
        except AttributeError:  # the config lacks a setting the rule reads
            continue
        except TypeError:
            good = False
        if not good:
            raise _refused(name, getattr(cfg, name), expected(cfg))
    for names in _DISTINCT_NAMES:
        held = [(name, getattr(cfg, name)) for name in names if hasattr(cfg, name)]
        for i, (name, value) in enumerate(held):
            same = [other for other, other_value in held[i + 1:] if Path(str(other_value)) == Path(str(value))]
            if same:
                raise ConfigError(f"{name}={value!r} and {same[0]}={getattr(cfg, same[0])!r}: expected different "
                                  f"names: both lie in one folder and would overwrite each other's files; set one "
                                  f"in config.py or with --set {same[0]}=...")


def _check_input_files(cfg: types.SimpleNamespace, names: Sequence[str]) -> None:
    """Raises ConfigError for the first of ``names`` that is an input-file setting naming no file (empty: unset)."""
    for name in names:
        value = getattr(cfg, name, "") if name in _INPUT_FILES else ""
        if not value:
            continue
        path = Path(value)
        if not (path.is_file() or (not path.is_absolute() and (Path(getattr(cfg, "DATA_ROOT", "")) / path).is_file())):
            raise ConfigError(f"{name}={value!r}: no such file; expected {_INPUT_FILES[name]}; set it in config.py or "
                              f"with --set {name}=...")


def load_config(overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> types.SimpleNamespace:
    """The effective config: ``base`` (default: config.py) with ``overrides`` applied, as attributes.

    Raises:
        ConfigError: a bad override (:func:`apply_overrides`), a setting that cannot work (:func:`check_settings`),
            or an input file that config.py or ``overrides`` name and that does not exist (``HISTOGRAM_REFERENCE``;
            a ``base``'s own files are not checked: a checkpoint names files of the machine it was made on).
    """
    settings = default_settings() if base is None else dict(base)
    cfg = types.SimpleNamespace(**apply_overrides(settings, overrides or []))
    check_settings(cfg)
    _check_input_files(cfg, list(_INPUT_FILES) if base is None
                       else [item.partition("=")[0].strip() for item in overrides or []])
    return cfg


def config_to_dict(cfg: types.SimpleNamespace) -> dict[str, Any]:
    """The settings of ``cfg`` as a JSON-friendly dict (tuples become lists)."""
    return json.loads(json.dumps(vars(cfg)))


def save_config(cfg: types.SimpleNamespace, path: str | Path) -> None:
    """Writes ``cfg`` as indented JSON to ``path``, atomically."""
    atomic_write_text(Path(path), json.dumps(vars(cfg), indent=2, sort_keys=True) + "\n")


# Settings added to restore the original's behaviour, whose default differs from what the code did before them: a
# config saved before a setting existed (an older checkpoint or run) gets the value that reproduces what it was
# made with, not config.py's default. Each value is a function of the saved settings.
EARLIER_BEHAVIOUR = {
    "DEPTH_SCALE": lambda saved: "spacing",
    "HISTOGRAM_ROUNDING": lambda saved: "round",
    "BSCAN_SHUFFLE_BUFFER": lambda saved: 0,
    "PATCH_SHUFFLE_BUFFER": lambda saved: 0,
    "KEPT_PATCH_SHUFFLE_BUFFER": lambda saved: 4 * int(saved.get("BATCH_SIZE", 16)),
    "DROP_PARTIAL_BATCH": lambda saved: False,
    "VAL_FRESH_PATCHES": lambda saved: False,
    "VAL_LOSS_WITH_L2": lambda saved: False,
    "DISCRIMINATOR_L2_WEIGHT": lambda saved: 0.0,
    "ADVERSARIAL_STEP": lambda saved: "separate",
}


def config_from_dict(saved: dict[str, Any]) -> types.SimpleNamespace:
    """Rebuilds a config saved by :func:`save_config` (JSON lists back to tuples where config.py has tuples).

    Settings that config.py no longer has are kept; settings it gained since are taken from config.py, except
    those of :data:`EARLIER_BEHAVIOUR`, which get the value that reproduces the code the config was saved by.
    """
    settings = default_settings()
    if saved:
        settings.update({name: earlier(saved) for name, earlier in EARLIER_BEHAVIOUR.items() if name not in saved})
    for name, value in saved.items():
        default = settings.get(name)
        if isinstance(default, tuple) and isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        settings[name] = value
    return types.SimpleNamespace(**settings)


def trained_config(saved: dict[str, Any], local_cfg: types.SimpleNamespace, local_names: Sequence[str],
                   set_names: Sequence[str] = (), source: str = "the checkpoint",
                   also_settable: Sequence[str] = ()) -> tuple[types.SimpleNamespace, list[str]]:
    """The one rule for where a setting comes from once a model is trained: the model's settings from what it was
    saved with (a checkpoint's config, or the ``config.json`` predict.py wrote beside its outputs), and only the
    ``local_names`` settings (about this machine, this command's inputs and how it runs) from config.py and
    ``--set`` (``local_cfg``).

    Args:
        saved: the saved settings (:func:`save_config`'s JSON, or a checkpoint's ``config``); settings newer than
            it get :func:`config_from_dict`'s values.
        local_cfg: config.py with this command's ``--set`` overrides.
        local_names: the settings taken from ``local_cfg``.
        set_names: the names this command's ``--set`` gave (:func:`set_names`).
        source: what ``saved`` is, for the notes.
        also_settable: names ``--set`` may give without a note although they are not local (handled by the
            caller, e.g. a setting a checkpoint may lack).

    Returns:
        ``(cfg, notes)``: one note per ``--set`` of a model setting whose value differs from the saved one (it is
        ignored: the model's outputs are read and scored with the settings it was made with).
    """
    settings = vars(config_from_dict(saved))
    notes = [f"--set {name}={getattr(local_cfg, name)!r} ignored: the model's own setting is used "
             f"({name}={settings[name]!r} in {source}); only {', '.join(local_names)} can be set"
             for name in dict.fromkeys(set_names)
             if name not in (*local_names, *also_settable) and getattr(local_cfg, name) != settings.get(name)]
    settings.update({name: getattr(local_cfg, name) for name in local_names})
    return load_config([], base=settings), notes


def keyword_overrides(settings: dict[str, Any]) -> list[str]:
    """Settings given by keyword from Python (``Predictor(path, DEVICE="cpu")``) as ``--set`` items
    (``NAME=VALUE``, the value a Python literal: paths as strings, numpy scalars as Python numbers), for
    :func:`load_config`."""
    items = []
    for name, value in settings.items():
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif isinstance(value, np.generic):
            value = value.item()
        items.append(f"{name}={value!r}")
    return items


def set_names(args: argparse.Namespace) -> list[str]:
    """The setting names the command line's own ``--set`` items give (a ``--preset``'s items left out)."""
    return [item.partition("=")[0].strip() for item in args.overrides if item not in args.preset_overrides]


class _PresetAction(argparse.Action):
    """``--preset NAME``: puts ``config.PRESETS[NAME]`` before the ``--set`` overrides (given before or after it),
    so that the command line's own ``--set`` win; the preset's items are kept in ``preset_overrides`` too."""

    def __call__(self, parser, namespace, value, option_string=None):
        items = list(default_config.PRESETS[value])
        earlier = [item for item in getattr(namespace, "overrides", None) or []
                   if item not in getattr(namespace, "preset_overrides", [])]
        namespace.preset_overrides = items
        namespace.overrides = items + earlier
        setattr(namespace, self.dest, value)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--set NAME=VALUE`` (repeatable) and ``--preset NAME`` to a script's parser; after parsing,
    ``overrides`` holds the preset's items first, then the ``--set`` items, and ``preset_overrides`` the preset's."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                        help="override a constant of config.py for this run (repeatable), e.g. --set EPOCHS=5")
    parser.add_argument("--preset", action=_PresetAction, choices=sorted(default_config.PRESETS),
                        help="apply a named set of overrides from config.py's PRESETS first (--set still wins)")
    parser.set_defaults(preset_overrides=[])
