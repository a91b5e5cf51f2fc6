"""Loading config.py with ``--set NAME=VALUE`` overrides, and saving the effective config as JSON."""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import math
import types
from pathlib import Path
from typing import Any, Callable

import config as default_config

from utils.errors import ConfigError  # noqa: F401  (re-exported: scripts import it from here)
from utils.io.files import atomic_write_text


DEVICES = ("auto", "cpu", "cuda")  # the values of DEVICE


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


# Settings whose type check passes but whose value cannot work: name -> (test, what is expected). Only the settings
# a config holds are checked (a checkpoint's config may predate some). MODEL and ENCODER are checked where the
# network is built, which knows the names.
# Settings that name one of a few choices (a wrong name gets the nearest suggested).
_CHOICES: dict[str, tuple[str, ...]] = {
    "MODEL": ("rmit_unet", "smp_unet"), "LOSS": ("rmit", "balanced_ce_dice", "ce_dice"),
    "PATCH_CENTRES": ("rmit", "stratified"), "LR_SCHEDULE": ("constant", "poly"),
    "STRATIFY_BY": ("vendor", "fluid", "none"), "AUGMENT": ("rmit", "replace"),
    "BEST_BY": ("val_loss", "dice_mean_fluid"), "PREDICT_REGION": ("band", "roi", "all"),
    "HISTOGRAM_ROUNDING": ("truncate", "round"), "DISCRIMINATOR": ("rmit", "strided"),
    "IMAGE_RESAMPLING": ("linear", "nearest"), "DEPTH_SCALE": ("height_table", "spacing"),
    "UNPADDED_BORDER": ("background", "padded"), "OPTIMIZER": ("adam", "sgd"),
    "ADVERSARIAL_STEP": ("discriminator_first", "separate"),
}
_VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "BATCH_SIZE": (lambda value: value >= 1, "an integer >= 1"),
    "EPOCHS": (lambda value: value >= 1, "an integer >= 1"),
    "BATCHES_PER_EPOCH": (lambda value: value >= 0, "an integer >= 0"),
    "BSCAN_SHUFFLE_BUFFER": (lambda value: value >= 0, "an integer >= 0 (0 or 1: no shuffle)"),
    "PATCH_SHUFFLE_BUFFER": (lambda value: value >= 0, "an integer >= 0 (0 or 1: no shuffle)"),
    "KEPT_PATCH_SHUFFLE_BUFFER": (lambda value: value >= 0, "an integer >= 0 (0 or 1: no shuffle)"),
    "BN_REESTIMATE_BATCHES": (lambda value: value >= 0, "an integer >= 0 (0: off)"),
    "VAL_BSCANS": (lambda value: value >= 0, "an integer >= 0 (0: every validation B-scan)"),
    "EMA_DECAY": (lambda value: 0 <= value < 1, "a number in [0, 1) (0: off)"),
    "DISCRIMINATOR_L2_WEIGHT": (lambda value: value >= 0, "a number >= 0"),
    "LEARNING_RATE": (lambda value: value > 0, "a number > 0"),
    "DEVICE": (lambda value: value in DEVICES, f"one of {', '.join(DEVICES)}"),
    "PRESENCE_GATE": (lambda value: 0 <= value <= 1, "a number in [0, 1]"),
    "BN_MOMENTUM": (lambda value: 0 < value <= 1, "a momentum in (0, 1]"),
    "MIN_COMPONENT_MM3": (lambda value: value >= 0, "a number of mm³ >= 0"),
    "ETDRS_DIAMETERS_MM": (lambda value: len(value) == 3 and 0 < value[0] < value[1] < value[2],
                           "three increasing diameters in mm, e.g. (1.0, 3.0, 6.0)"),
    "FOVEA_SEARCH_RADIUS_MM": (lambda value: value > 0, "a radius in mm > 0"),
    "FOVEA_MIN_DEPTH_MM": (lambda value: value >= 0, "a depth in mm >= 0"),
    "TRAIN_BUDGET_MINUTES": (lambda value: value >= 0, "a number of minutes >= 0 (0: no budget)"),
    "EMPTY_PATCH_DROP_PROB": (lambda value: 0 <= value <= 1, "a probability in [0, 1]"),
    "CIRRUS_IMG_SHAPE": (lambda value: len(value) == 2 and all(isinstance(v, int) and v >= 1 for v in value),
                         "a B-scan size (depth, width) in pixels, e.g. (1024, 512)"),
    "CIRRUS_IMG_SPACING_MM": (lambda value: _spacing_or_unset(value, 3),
                              "() or 3 spacings (x, y, z) in mm > 0, e.g. (0.0117, 0.00195, 0.047)"),
    "TOPCON_SPACING_MM": (lambda value: _spacing_or_unset(value, 3),
                          "() or 3 spacings (x, y, z) in mm > 0, e.g. (0.0117, 0.0026, 0.047)"),
    "E2E_SPACING_XZ_MM": (lambda value: _spacing_or_unset(value, 2),
                          "() or 2 spacings (x, z) in mm > 0, e.g. (0.0114, 0.12)"),
}


def _spacing_or_unset(value, length: int) -> bool:
    """``()`` (unset) or ``length`` positive finite numbers."""
    return len(value) == 0 or (len(value) == length and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value))


def check_settings(cfg: types.SimpleNamespace) -> None:
    """Checks the values that pass the type check but cannot work, before any work starts.

    Args:
        cfg: a config (as :func:`load_config` returns); settings it lacks are not checked.

    Raises:
        ConfigError: the first bad setting, with what it holds and what is expected, e.g.
            ``BATCH_SIZE=0: expected an integer >= 1; set it in config.py or with --set BATCH_SIZE=...``.
    """
    for name, options in _CHOICES.items():
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
            raise ConfigError(f"{name}={getattr(cfg, name)!r}: expected {expected}; set it in config.py or with "
                              f"--set {name}=...")


def load_config(overrides: list[str] | None = None, base: dict[str, Any] | None = None) -> types.SimpleNamespace:
    """The effective config: ``base`` (default: config.py) with ``overrides`` applied, as attributes.

    Raises:
        ConfigError: a bad override (:func:`apply_overrides`) or a setting that cannot work (:func:`check_settings`).
    """
    settings = default_settings() if base is None else dict(base)
    cfg = types.SimpleNamespace(**apply_overrides(settings, overrides or []))
    check_settings(cfg)
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
