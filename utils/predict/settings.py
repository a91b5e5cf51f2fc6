"""The settings predict.py runs with: the checkpoint's, with those about this machine and inference from config.py
and ``--set`` on top, so every volume is preprocessed and scaled exactly as in training; and the few of them that
whole-volume inference reads (:class:`InferenceSettings`)."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

import config
from utils.configuration import trained_config
from utils.predict import tiling
from utils.stage_settings import settings_from_config

# Settings that describe this machine or how inference runs, not the model: taken from config.py and --set. All
# others come from the checkpoint, so the volumes are preprocessed and scaled exactly as in training.
INFERENCE_SETTINGS = ("PREDICT_REGION", "UNPADDED_BORDER", "TTA_FLIP", "PRESENCE_GATE", "MIN_COMPONENT_MM3",
                      "BLANK_COLUMNS_BACKGROUND", "INFERENCE_BATCH_SIZE", "INFERENCE_TILE_SHAPE",
                      "INFERENCE_TILE_OVERLAP", "PRESENCE_MIN_VOLUME_MM3", "ETDRS_DIAMETERS_MM", "FOVEA_SEARCH_RADIUS_MM",
                      "FOVEA_MIN_DEPTH_MM")
# The vendor-file settings say how to read an input, not how the model was trained.
VENDOR_FILE_SETTINGS = ("CIRRUS_IMG_SHAPE", "CIRRUS_IMG_SPACING_MM", "TOPCON_SPACING_MM", "E2E_SPACING_XZ_MM")
# Settings a checkpoint may lack: segment.model_histogram_reference takes HISTOGRAM_REFERENCE from --set only then.
SUPPLIED_SETTINGS = ("HISTOGRAM_REFERENCE",)
LOCAL_SETTINGS = ("WORK_DIR", "RUNS_SUBDIR", "PREDICTIONS_SUBDIR", "DEVICE", "MIXED_PRECISION",
                  "CHANNELS_LAST") + INFERENCE_SETTINGS + VENDOR_FILE_SETTINGS


def inference_config(checkpoint: dict, local_cfg, set_names: list[str] = ()) -> tuple[types.SimpleNamespace,
                                                                                        list[str]]:
    """The effective config: the checkpoint's settings, with ``LOCAL_SETTINGS`` from ``local_cfg`` on top
    (:func:`utils.configuration.trained_config`).

    Args:
        checkpoint: a loaded checkpoint (its ``config``).
        local_cfg: config.py with this command's ``--set`` overrides.
        set_names: the names this command's ``--set`` overrides.

    Returns:
        ``(cfg, notes)``: one note per overridden setting that is not local and differs from the checkpoint's
        (ignored: the model is used with the settings it was trained with).
    """
    return trained_config(checkpoint.get("config") or {}, local_cfg, LOCAL_SETTINGS, set_names,
                          also_settable=SUPPLIED_SETTINGS)


def check_inference_settings(cfg, multiple: int) -> None:
    """Raises ValueError naming the first inference setting of ``cfg`` that cannot work."""
    tiling.check_tiling(tuple(cfg.INFERENCE_TILE_SHAPE), cfg.INFERENCE_TILE_OVERLAP, multiple)
    if cfg.INFERENCE_BATCH_SIZE < 1:
        raise ValueError(f"INFERENCE_BATCH_SIZE must be >= 1, got {cfg.INFERENCE_BATCH_SIZE}")
    if cfg.PRESENCE_MIN_VOLUME_MM3 < 0:
        raise ValueError(f"PRESENCE_MIN_VOLUME_MM3 must be >= 0 mm³, got {cfg.PRESENCE_MIN_VOLUME_MM3}")


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """What whole-volume inference (:mod:`utils.predict.inference`, :mod:`utils.predict.band`) reads of the config,
    built once per run (:meth:`from_config`). Each field is the config.py setting of the same name in upper case
    (see config.py for its meaning); the defaults are config.py's, so a test names only what it changes."""

    patch_shape: tuple[int, int] = config.PATCH_SHAPE  # (rows, columns) the network was trained on
    spectralis_axial_spacing_mm: float = config.SPECTRALIS_AXIAL_SPACING_MM
    depth_scale: str = config.DEPTH_SCALE
    image_resampling: str = config.IMAGE_RESAMPLING
    predict_region: str = config.PREDICT_REGION
    unpadded_border: str = config.UNPADDED_BORDER
    tta_flip: bool = config.TTA_FLIP
    blank_columns_background: bool = config.BLANK_COLUMNS_BACKGROUND
    inference_tile_shape: tuple[int, int] = config.INFERENCE_TILE_SHAPE
    inference_tile_overlap: int = config.INFERENCE_TILE_OVERLAP
    n_classes: int = config.N_CLASSES
    fluids: Mapping[str, int] = dataclasses.field(default_factory=lambda: dict(config.FLUIDS))
    presence_min_volume_mm3: float = config.PRESENCE_MIN_VOLUME_MM3
    entropy_disk_radius: int = config.ENTROPY_DISK_RADIUS  # the ROI, as prepare_data.py computes it
    entropy_threshold: float = config.ENTROPY_THRESHOLD
    closing_disk_radius: int = config.CLOSING_DISK_RADIUS

    @classmethod
    def from_config(cls, cfg) -> InferenceSettings:
        """The inference settings of an effective config (:func:`inference_config`'s, or any loaded config)."""
        return settings_from_config(cls, cfg)
