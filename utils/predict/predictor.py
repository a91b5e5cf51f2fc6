"""predict.py as a Python API: ``Predictor(checkpoint).segment(path_or_array)``.

The model and its settings are loaded once, then any number of volumes go through, as nnU-Net's ``nnUNetPredictor``
(``initialize_from_trained_model_folder``, then ``predict_single_npy_array``). The settings are predict.py's
(:func:`utils.predict.settings.inference_config`: the checkpoint's, with the local ones of ``LOCAL_SETTINGS``
overridable), and a volume goes through the functions predict.py calls (:func:`utils.predict.segment.load_case` or
:func:`~utils.predict.segment.prepare_volume`, then :func:`~utils.predict.segment.segment_volume`), so its labels
are those predict.py writes for the same input and checkpoints. Nothing is written: save the labels with
:func:`utils.io.mhd_io.write_volume`.

The loading here is predict.py's too, in its two steps: the checkpoints and their settings (:func:`load_trained`),
then the device and the network (:func:`load_network`); predict.py checks its cases and output folder in between.
"""

from __future__ import annotations

import dataclasses
import os
import types
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from utils.configuration import keyword_overrides, load_config
from utils.io.cases import file_case
from utils.io.mhd_io import Geometry, check_array_volume
from utils.io.vendor_files import VendorFileSettings
from utils.model.checkpoints import load_checkpoint, model_from_checkpoint
from utils.model.networks import fold_batch_norms
from utils.model.runtime import Runtime, RuntimeSettings, select_runtime
from utils.predict import tiling
from utils.predict.ensemble import ProbabilityEnsemble, check_members
from utils.predict.inference import fluid_volumes_mm3
from utils.predict.segment import (load_case, model_histogram_reference, prepare_volume, reference_counts,
                                   segment_volume)
from utils.predict.settings import PredictSettings, check_inference_settings, inference_config


def load_checkpoints(paths: Sequence[Path]) -> list[dict]:
    """The checkpoints of ``paths`` (one, or an ensemble's members), each holding the settings it was trained with,
    members that prepare their input alike (:func:`utils.predict.ensemble.check_members`).

    Raises:
        FileNotFoundError: a path names no file.
        ValueError: not a retouch checkpoint, one without a config, or ensemble members that differ in their input
            settings; the message names the file.
    """
    checkpoints = [load_checkpoint(path) for path in paths]
    for path, checkpoint in zip(paths, checkpoints):
        if not isinstance(checkpoint.get("config"), dict):
            raise ValueError(f"{path}: the checkpoint holds no config; predict.py needs the settings the model "
                             f"was trained with (use a checkpoint written by train.py)")
    check_members(paths, checkpoints)
    return checkpoints


def inference_model(checkpoint: dict, runtime: Runtime) -> nn.Module:
    """The checkpoint's network in eval mode on ``runtime.device`` (channels-last when ``runtime`` says so), its
    batch norms folded into the convs before them where they directly follow one."""
    model = fold_batch_norms(model_from_checkpoint(checkpoint)).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def inference_network(paths: Sequence[Path], checkpoints: Sequence[dict], runtime: Runtime) -> nn.Module:
    """The network predict.py segments with: the one checkpoint's (:func:`inference_model`), or several averaged
    as probabilities (:class:`utils.predict.ensemble.ProbabilityEnsemble`).

    Raises:
        ValueError: a network that cannot be built from its checkpoint (the message starts with its path), or
            members that cannot form an ensemble (it starts with all the paths).
    """
    members = []
    for path, checkpoint in zip(paths, checkpoints):
        try:
            members.append(inference_model(checkpoint, runtime))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    if len(members) == 1:
        return members[0]
    try:
        return ProbabilityEnsemble(members)
    except ValueError as error:
        raise ValueError(f"{' '.join(map(str, paths))}: {error}") from None


def load_trained(checkpoint_paths: Sequence[Path], local_cfg, set_names: Sequence[str] = (),
                 ) -> tuple[list[dict], types.SimpleNamespace, PredictSettings, list[str]]:
    """The checkpoints (:func:`load_checkpoints`) and the settings they are run with: the first one's
    (:func:`utils.predict.settings.inference_config`), built once into :class:`PredictSettings`.

    Args:
        checkpoint_paths: one checkpoint, or an ensemble's members.
        local_cfg: config.py with this command's overrides (``--set``, or ``Predictor``'s keywords).
        set_names: the names those overrides set.

    Returns:
        ``(checkpoints, cfg, settings, notes)``: ``cfg`` the effective config (saved as ``config.json``),
        ``settings`` what the library functions read of it, ``notes`` one line per override ignored.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_checkpoints`.
        ConfigError: a checkpoint's setting that cannot be used.
    """
    checkpoints = load_checkpoints(checkpoint_paths)
    cfg, notes = inference_config(checkpoints[0], local_cfg, list(set_names))
    return checkpoints, cfg, PredictSettings.from_config(cfg), notes


def load_network(checkpoint_paths: Sequence[Path], checkpoints: Sequence[dict], runtime_settings: RuntimeSettings,
                 settings: PredictSettings) -> tuple[Runtime, nn.Module]:
    """The device, precision and layout (:func:`utils.model.runtime.select_runtime` of ``runtime_settings``: the
    effective config's ``DEVICE``, ``MIXED_PRECISION``, ``BF16_SPEED_CHECK``, ``CHANNELS_LAST``) and the network on it
    (:func:`inference_network`), its inference settings (``settings``) checked against it
    (:func:`utils.predict.settings.check_inference_settings`).

    Raises:
        ConfigError: a device this machine lacks, or inference settings that cannot work with the network.
        ValueError: a network that cannot be built from its checkpoint, or members that cannot form an ensemble;
            the message starts with the path(s).
    """
    runtime = select_runtime(runtime_settings)
    model = inference_network(checkpoint_paths, checkpoints, runtime)
    check_inference_settings(settings, tiling.input_multiple(model))
    return runtime, model


@dataclasses.dataclass(frozen=True)
class Segmentation:
    """One volume segmented by :meth:`Predictor.segment`.

    Attributes:
        labels: ``(z, y, x)`` uint8 label codes (0 background, then ``cfg.FLUIDS``: IRF 1, SRF 2, PED 3), the
            input's size: what predict.py writes as ``segmentation.mhd``.
        geometry: the input's geometry (spacing ``(x, y, z)`` mm, origin, direction): write the labels with it.
        vendor: the vendor whose preprocessing the volume got.
        volumes_mm3: fluid name -> volume in mm³ (voxel count x voxel volume), as ``volumes.csv``.
        presence: fluid name -> presence score in [0, 1] (:mod:`utils.predict.presence`), as ``volumes.csv``.
        probabilities: when asked for, fluid name -> ``(z, y, x)`` uint8 softmax probability ``round(255 p)``
            (before the post-processing of the labels), as ``--save-probabilities`` writes them; else None.
        laterality: ``"R"``, ``"L"`` (from a vendor file) or ``""`` (unknown).
    """

    labels: np.ndarray
    geometry: Geometry
    vendor: str
    volumes_mm3: dict[str, float]
    presence: dict[str, float]
    probabilities: dict[str, np.ndarray] | None = None
    laterality: str = ""


class Predictor:
    """A trained model (or an ensemble) loaded once, segmenting any number of volumes as predict.py does.

    Args:
        checkpoint_paths: a checkpoint written by train.py, or several: an ensemble whose softmax probabilities are
            averaged (they must prepare their input alike; the settings and histogram reference are the first
            one's).
        **overrides: settings of config.py by name, as predict.py's ``--set`` (e.g. ``DEVICE="cpu"``,
            ``PREDICT_REGION="all"``): those of ``LOCAL_SETTINGS`` (utils/predict/settings.py) take effect; any
            other that differs from the checkpoint's is ignored with a warning (the model is used with the settings
            it was trained with); ``HISTOGRAM_REFERENCE`` only for a checkpoint without one.

    Attributes:
        cfg: the effective config (predict.py's ``config.json``).
        settings: what the library functions read of it (:class:`utils.predict.settings.PredictSettings`).
        runtime: device, mixed precision and memory layout.
        model: the network or ensemble, in eval mode on ``runtime.device``.
        notes: what predict.py would print as notes (ignored overrides, ...), each also given as a warning.

    Raises:
        ConfigError: an unknown setting (the nearest name suggested), a value of the wrong type or one that cannot
            work (inference settings with this network included), or a device this machine lacks.
        FileNotFoundError: a checkpoint (or ``HISTOGRAM_REFERENCE``) that does not exist.
        ValueError: a checkpoint that cannot be used, or members that cannot form an ensemble; the message names
            the file.
    """

    def __init__(self, checkpoint_paths: str | os.PathLike | Sequence[str | os.PathLike], **overrides: Any):
        if isinstance(checkpoint_paths, (str, os.PathLike)):
            checkpoint_paths = [checkpoint_paths]
        self.checkpoint_paths = [Path(path) for path in checkpoint_paths]
        if not self.checkpoint_paths:
            raise ValueError("Predictor needs at least one checkpoint path")
        local_cfg = load_config(keyword_overrides(overrides))
        self.checkpoints, self.cfg, self.settings, self.notes = load_trained(self.checkpoint_paths, local_cfg,
                                                                             list(overrides))
        given_reference = local_cfg.HISTOGRAM_REFERENCE if "HISTOGRAM_REFERENCE" in overrides else ""
        reference, _, reference_notes = model_histogram_reference(self.checkpoints[0], given_reference,
                                                                  VendorFileSettings.from_config(local_cfg))
        self.notes += reference_notes
        for note in self.notes:
            warnings.warn(note, stacklevel=2)
        self.reference_counts = reference_counts(reference)
        self.runtime, self.model = load_network(self.checkpoint_paths, self.checkpoints,
                                                RuntimeSettings.from_config(self.cfg), self.settings)

    def segment(self, volume: str | os.PathLike | np.ndarray, geometry: Geometry | None = None,
                vendor: str | None = None, keep_probabilities: bool = False) -> Segmentation:
        """Segments one volume as predict.py segments a case.

        Args:
            volume: a file predict.py reads (an ``oct.mhd``, its vendor from its folders or its type and size, or a
                vendor file: ``.vol``, ``.e2e``, Heyex ``.xml``, ``.img``, ``.fds``/``.fda``, ``.dcm``), or a
                ``(z, y, x)`` = (B-scan, depth, width) array, uint8 (Cirrus, Topcon) or uint16 (Spectralis).
            geometry: the array's geometry (spacing ``(x, y, z)`` mm: depth scaling and volumes depend on it);
                only with an array.
            vendor: one of the model's ``VENDORS``: which preprocessing the volume gets. Needed with an array; for
                a file, it replaces the vendor read from its path or header.
            keep_probabilities: also return each fluid's probability volume (uint8, ``round(255 p)``).

        Returns:
            :class:`Segmentation`.

        Raises:
            FileNotFoundError: no such file.
            VolumeError, ValueError, OSError: a file that cannot be read, an array without geometry or vendor or
                of another shape or type, a vendor the model does not take; the message names the file.
        """
        settings = self.settings
        vendors = settings.preprocess.vendor_files.vendors
        if vendor is not None and vendor not in vendors:
            raise ValueError(f"vendor={vendor!r}: expected one of the model's VENDORS: {', '.join(vendors)}")
        if isinstance(volume, (str, os.PathLike)):
            path = Path(volume)
            if geometry is not None:
                raise ValueError(f"{path}: a file holds its own geometry; give geometry only with an array")
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no such file; give an oct.mhd or a vendor file (a folder of "
                                        f"cases: predict.py)")
            case = file_case(path, vendors)
            if vendor is not None:
                case = dataclasses.replace(case, vendor=vendor)
            loaded = load_case(case, settings, self.reference_counts)
            vendor = case.vendor
        else:
            array = np.asarray(volume)
            check_array_volume(array, geometry, vendor, "segment")
            loaded = prepare_volume(array, geometry, vendor, settings, self.reference_counts, source="array")
        result = segment_volume(self.model, loaded, settings, self.runtime, keep_probabilities)
        return Segmentation(result.labels, loaded.geometry, vendor,
                            fluid_volumes_mm3(result.labels, loaded.geometry, settings.fluids), result.presence,
                            result.probabilities, loaded.laterality)
