"""The settings predict.py runs with: the checkpoint's, with those about this machine and inference from config.py
and ``--set`` on top, so every volume is preprocessed and scaled exactly as in training; the few of them that
whole-volume inference reads (:class:`InferenceSettings`), and all that predict.py's library functions read
(:class:`PredictSettings`, built once per run)."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Iterable, Mapping
from typing import Any

import config
from utils.configuration import ConfigError, trained_config
from utils.predict import tiling
from utils.prepare.preprocessing import PreprocessSettings
from utils.stage_settings import settings_from_config

# Settings that describe this machine or how inference runs, not the model: taken from config.py and --set. All
# others come from the checkpoint, so the volumes are preprocessed and scaled exactly as in training.
INFERENCE_SETTINGS = ("PREDICT_REGION", "UNPADDED_BORDER", "TTA_FLIP", "TTA_ROTATE_DEGREES", "FLUID_THRESHOLD",
                      "PRESENCE_GATE",
                      "MIN_COMPONENT_MM3", "FLUID_CLOSING_MM",
                      "BLANK_COLUMNS_BACKGROUND", "INFERENCE_BATCH_SIZE", "INFERENCE_TILE_SHAPE",
                      "INFERENCE_TILE_OVERLAP", "PRESENCE_MIN_VOLUME_MM3", "ETDRS_DIAMETERS_MM",
                      "FOVEA_SEARCH_RADIUS_MM", "FOVEA_MIN_DEPTH_MM")
# The vendor-file settings say how to read an input, not how the model was trained.
VENDOR_FILE_SETTINGS = ("CIRRUS_IMG_SHAPE", "CIRRUS_IMG_SPACING_MM", "TOPCON_SPACING_MM", "E2E_SPACING_XZ_MM")
# Settings a checkpoint may lack: segment.model_histogram_reference takes HISTOGRAM_REFERENCE from --set only then.
SUPPLIED_SETTINGS = ("HISTOGRAM_REFERENCE",)
LOCAL_SETTINGS = ("WORK_DIR", "RUNS_SUBDIR", "PREDICTIONS_SUBDIR", "DEVICE", "MIXED_PRECISION",
                  "BF16_SPEED_CHECK", "CHANNELS_LAST") + INFERENCE_SETTINGS + VENDOR_FILE_SETTINGS


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


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """What whole-volume inference (:mod:`utils.predict.inference`, :mod:`utils.predict.band`) reads of the config,
    built once per run (:meth:`from_config`). Each field is the config.py setting of the same name in upper case
    (see config.py for its meaning); the defaults are config.py's, so a test names only what it changes."""

    patch_shape: tuple[int, int] = config.PATCH_SHAPE  # (rows, columns) the network was trained on
    spectralis_axial_spacing_mm: float = config.SPECTRALIS_AXIAL_SPACING_MM
    depth_scale: str = config.DEPTH_SCALE
    image_resampling: str = config.IMAGE_RESAMPLING
    input_channels: str = config.INPUT_CHANNELS  # the B-scans behind the network's three input channels
    predict_region: str = config.PREDICT_REGION
    unpadded_border: str = config.UNPADDED_BORDER
    tta_flip: bool = config.TTA_FLIP
    tta_rotate_degrees: tuple[float, ...] = config.TTA_ROTATE_DEGREES
    blank_columns_background: bool = config.BLANK_COLUMNS_BACKGROUND
    fluid_threshold: float = config.FLUID_THRESHOLD  # 0: arg-max labels; else fluid where 1 - p(background) >= it
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


@dataclasses.dataclass(frozen=True)
class PredictSettings:
    """What predict.py's library functions read of the effective config (:func:`inference_config`), built once per
    run (:meth:`from_config`) by predict.py and :class:`utils.predict.predictor.Predictor`: how a volume is read and
    preprocessed, segmented and post-processed, the ETDRS grid, and the names of the files written. Each field is the
    config.py setting of the same name in upper case (see config.py for its meaning), except the nested ones; the
    defaults are config.py's, so a test names only what it changes.

    Attributes:
        preprocess: reading (``vendor_files``: ``VENDORS`` and the vendor-file spacings) and preprocessing a volume,
            as in training (``HISTOGRAM_MATCH_VENDORS``, the medians; ``BACKGROUND``, ``PNG_COMPRESS_LEVEL``; the
            slices folder ``slice_layout.slices_subdir``).
        inference: whole-volume inference (``PREDICT_REGION``, tiling, ``TTA_FLIP``, ``FLUIDS``, the ROI, ...).
        inference_batch_size: B-scans per forward pass, >= 1.
        presence_gate: a fluid whose presence score (in [0, 1]) is below this is removed (0: off).
        min_component_mm3: connected fluid components smaller than this are removed (0: off).
        fluid_closing_mm: each fluid closed per B-scan by an ellipse of this radius in mm (0: off).
        etdrs_diameters_mm: the ETDRS circles' diameters, increasing.
        fovea_search_radius_mm, fovea_min_depth_mm: where and how deep the fovea is looked for.
        segmentation_file, probability_file: a case's label volume and its fluids' probability volumes
            (``{fluid}`` filled in), in ``OUT/<case>/``.
        report_png: a case's report, in ``OUT/<case>/``.
        work_dir: the work folder (its prepared slices are never written into).
        data_root: the model's training data (never written into).
        volumes_csv, config_json, itksnap_labels_file, slicer_colours_file, report_html: the run's files in ``OUT``.
    """

    preprocess: PreprocessSettings = dataclasses.field(default_factory=PreprocessSettings)
    inference: InferenceSettings = dataclasses.field(default_factory=InferenceSettings)
    inference_batch_size: int = config.INFERENCE_BATCH_SIZE
    presence_gate: float = config.PRESENCE_GATE
    min_component_mm3: float = config.MIN_COMPONENT_MM3
    fluid_closing_mm: float = config.FLUID_CLOSING_MM
    etdrs_diameters_mm: tuple[float, ...] = config.ETDRS_DIAMETERS_MM
    fovea_search_radius_mm: float = config.FOVEA_SEARCH_RADIUS_MM
    fovea_min_depth_mm: float = config.FOVEA_MIN_DEPTH_MM
    segmentation_file: str = config.SEGMENTATION_FILE
    probability_file: str = config.PROBABILITY_FILE
    report_png: str = config.REPORT_PNG
    work_dir: str = config.WORK_DIR
    data_root: str = config.DATA_ROOT
    volumes_csv: str = config.VOLUMES_CSV
    config_json: str = config.CONFIG_JSON
    itksnap_labels_file: str = config.ITKSNAP_LABELS_FILE
    slicer_colours_file: str = config.SLICER_COLOURS_FILE
    report_html: str = config.REPORT_HTML

    @classmethod
    def from_config(cls, cfg) -> PredictSettings:
        """The predict settings of an effective config (:func:`inference_config`'s, or any loaded config)."""
        return settings_from_config(cls, cfg, preprocess=PreprocessSettings.from_config(cfg),
                                    inference=InferenceSettings.from_config(cfg))

    @property
    def fluids(self) -> Mapping[str, int]:
        """Fluid name -> label code (``FLUIDS``)."""
        return self.inference.fluids

    def by_name(self, names: Iterable[str]) -> dict[str, Any]:
        """The settings ``names`` (config.py names, each a field of this object or of its ``inference``), by name,
        in the order given: what a case marker records (:func:`utils.predict.markers.run_identity`)."""
        fields = {**vars(self.inference), **vars(self)}
        return {name: fields[name.lower()] for name in names}


def check_inference_settings(settings: PredictSettings, multiple: int) -> None:
    """Checks the inference settings that the config's value rules cannot (they depend on the network).

    Args:
        settings: the run's settings.
        multiple: the network's input multiple (:func:`utils.predict.tiling.input_multiple`), >= 1.

    Raises:
        ConfigError: naming the first inference setting that cannot work (the tiles, the batch size, the presence
            scores' smallest volume).
    """
    inference = settings.inference
    try:
        tiling.check_tiling(tuple(inference.inference_tile_shape), inference.inference_tile_overlap, multiple)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if settings.inference_batch_size < 1:
        raise ConfigError(f"INFERENCE_BATCH_SIZE must be >= 1, got {settings.inference_batch_size}")
    if inference.presence_min_volume_mm3 < 0:
        raise ConfigError(f"PRESENCE_MIN_VOLUME_MM3 must be >= 0 mm³, got {inference.presence_min_volume_mm3}")
