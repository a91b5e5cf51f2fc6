"""evaluate.py as a Python API: a prediction folder (:func:`evaluate_folder`) or label arrays
(:func:`evaluate_arrays`) scored against the references, as per-case and summary tables; nothing is written.

The tables are evaluate.py's ``per_case.csv`` and ``summary.csv``: evaluate.py computes them with
:func:`evaluation_config` and :func:`score_folder`, the functions :func:`evaluate_folder` calls, and writes them with
:func:`utils.io.files.atomic_write_csv`. The model's settings (label codes, file names) follow evaluate.py's rule:
those of the prediction folder's ``config.json`` (predict.py's, the checkpoint's), with only
``EVALUATION_LOCAL_SETTINGS`` from config.py and the keyword overrides; without a ``config.json`` every setting is
config.py's with the overrides.

Example::

    from utils.evaluate.evaluator import evaluate_arrays, evaluate_folder
    from utils.io.mhd_io import read_volume

    result = evaluate_folder("work/predictions/run1", data_root="data")  # as evaluate.py, writing nothing
    print(result.summary.query("vendor == 'all'")[["fluid", "dice_mean_with_fluid", "auc"]])
    print(result.failed or "every input used")
    references = {"TRAIN001": read_volume("data/Cirrus/TRAIN001/reference.mhd")}  # (labels, geometry)
    predictions = {"TRAIN001": read_volume("work/predictions/run1/TRAIN001/segmentation.mhd")}  # or labels alone
    print(evaluate_arrays(predictions, references, {"TRAIN001": "Cirrus"}).per_case[["fluid", "dice"]])
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from utils.configuration import ConfigError, keyword_overrides, load_config, trained_config
from utils.evaluate import volume_metrics
from utils.io.cases import Case, find_cases
from utils.io.mhd_io import Geometry, VolumeError, check_labels, find_volume
from utils.io.tables import read_split_cases
from utils.stage_settings import settings_from_config

# The settings of evaluate.py itself, not of the model: where the references are, which vendors' cases to score, the
# spacing tolerance, the name of the saved config. All others come from PRED/config.json when it exists.
EVALUATION_LOCAL_SETTINGS = ("DATA_ROOT", "VENDORS", "SPACING_RTOL", "CONFIG_JSON")



@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """What scoring reads of the effective config, built once per evaluation (:meth:`from_config`). Each field is
    the config.py setting of the same name in upper case.

    Attributes:
        vendors: the vendors whose cases are scored, in the summary's order.
        fluids: fluid name -> label code (``{"IRF": 1, "SRF": 2, "PED": 3}``); ``background`` the background code.
        spacing_rtol: relative tolerance when a prediction's voxel spacing is compared with its reference's.
        segmentation_file, volumes_csv: predict.py's file names (``<case>/segmentation.mhd``, ``volumes.csv``).
    """

    vendors: tuple[str, ...]
    fluids: Mapping[str, int]
    background: int
    spacing_rtol: float
    segmentation_file: str
    volumes_csv: str

    @classmethod
    def from_config(cls, cfg) -> "EvaluationSettings":
        return settings_from_config(cls, cfg)


Report = Callable[[str, bool], None]
"""Receives each line evaluate.py prints while scoring, as it happens: ``report(line, problem)``; problems
(``error: ...``, ``warning: ...``, cases left out) go to stderr, the other lines to stdout."""


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Label volumes scored against their references, as evaluate.py scores them.

    Attributes:
        per_case: one row per case and fluid, the columns ``volume_metrics.PER_CASE_COLUMNS`` (evaluate.py's
            ``per_case.csv``): ``dice`` in [0, 1] (NaN for a fluid in neither volume), volumes in mm³,
            ``presence_score`` in [0, 1].
        summary: one row per vendor (then ``"all"``) and fluid, the columns ``volume_metrics.SUMMARY_COLUMNS``
            (evaluate.py's ``summary.csv``; :func:`utils.evaluate.volume_metrics.summarize`).
        cfg: the effective settings (evaluate.py's ``config.json``); None from :func:`score_folder`, which is given
            only the settings it uses (its callers add theirs with ``dataclasses.replace``).
        failed: the inputs that could not be used, each named by its file (evaluate.py then exits with 1; the
            other cases are scored).
        messages: the lines evaluate.py prints while scoring (notes, warnings, one ``error: ...`` line per input
            that could not be used), in order.
        settings_source: where the model's settings came from: a ``config.json``, or config.py.
        presence_source: where the presence scores came from: a ``volumes.csv``, or the predicted label volumes.
        pooled_fluid_dice: every fluid merged, Dice pooled over the voxels of all cases scored
            (:func:`utils.evaluate.volume_metrics.pooled_dice`), in [0, 1]; NaN when none holds fluid.
    """

    per_case: pd.DataFrame
    summary: pd.DataFrame
    cfg: types.SimpleNamespace | None = None
    failed: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    settings_source: str = "config.py"
    presence_source: str = "the predicted label volumes"
    pooled_fluid_dice: float = float("nan")


def evaluation_config(pred_dir: Path, local_cfg: types.SimpleNamespace, names: list[str]
                      ) -> tuple[types.SimpleNamespace, list[str], str]:
    """The effective config: ``pred_dir/CONFIG_JSON`` (predict.py's) with ``EVALUATION_LOCAL_SETTINGS`` from
    ``local_cfg`` on top (:func:`utils.configuration.trained_config`), or ``local_cfg`` alone when the folder holds
    no such file.

    Args:
        pred_dir: the prediction folder.
        local_cfg: config.py with the ``--set`` overrides.
        names: the names the overrides set (a note for each model setting they would change).

    Returns:
        ``(cfg, notes, where the model's settings came from)``.

    Raises:
        ValueError: a ``config.json`` that cannot be read or holds settings that cannot work; the message names it.
    """
    path = Path(pred_dir) / local_cfg.CONFIG_JSON
    if not path.is_file():
        return local_cfg, [], f"config.py (no {path}: labels not written by predict.py)"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable settings file ({error.__class__.__name__}: {error}); expected "
                         f"the config.json predict.py writes, or none") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: holds a JSON {type(saved).__name__}, expected the settings object predict.py "
                         f"writes")
    try:
        cfg, notes = trained_config(saved, local_cfg, EVALUATION_LOCAL_SETTINGS, names, source=str(path))
    except ConfigError as error:
        raise ValueError(f"{path}: {error}") from None
    return cfg, notes, str(path)


def find_predictions(pred_dir: Path, file_name: str) -> dict[str, Path]:
    """Case name -> ``pred_dir/<case>/<file_name>``, for every sub-folder that holds one, in any of the formats
    ``predict.py --format`` writes (:func:`utils.io.mhd_io.find_volume`: ``segmentation.nii.gz`` counts for
    ``segmentation.mhd``; the named one first when a folder holds several)."""
    found = {}
    for folder in sorted(path for path in Path(pred_dir).iterdir() if path.is_dir()):
        path = find_volume(folder, file_name)
        if path is not None:
            found[folder.name] = path
    return found


def _names(names) -> str:
    return ", ".join(sorted(names))


def select_pairs(pred_dir: Path, settings: EvaluationSettings, data_root: Path, split_file: Path | None, split: str | None,
                 report: Report) -> tuple[list[tuple[Case, Path]], list[str]]:
    """The ``(case, prediction file)`` pairs to score: cases under ``data_root`` with a reference and a prediction
    in ``pred_dir``, restricted to ``split`` of ``split_file`` when given. Unmatched cases are reported as warnings;
    a case or folder under the data root that cannot be used as an error line (the others are still scored).

    Returns:
        ``(pairs, the lines of the cases and folders that could not be used)``.

    Raises:
        FileNotFoundError, ValueError: no data root, an unusable split file, or no pair; the message names the file.
    """
    cases, case_errors = find_cases(data_root, settings.vendors)
    selected = set(read_split_cases(split_file, split)) if split_file is not None else None
    for line in case_errors:
        report(f"error: {line}", True)
    predictions = find_predictions(pred_dir, settings.segmentation_file)
    if selected is not None:
        unknown = selected - {case.name for case in cases}
        if unknown:
            report(f"warning: {len(unknown)} case(s) of split {split!r} in {split_file} not found under {data_root}: "
                   f"{_names(unknown)}", True)
        cases = [case for case in cases if case.name in selected]
        outside = [name for name in predictions if name not in selected]
        if outside:
            report(f"{len(outside)} prediction(s) of cases outside split {split!r} ignored", True)
        predictions = {name: path for name, path in predictions.items() if name in selected}
    references = {case.name: case for case in cases if case.has_reference}
    no_prediction = [name for name in references if name not in predictions]
    no_reference = [name for name in predictions if name not in references]
    if no_prediction:
        report(f"warning: {len(no_prediction)} case(s) with a reference but no {pred_dir}/<case>/"
               f"{settings.segmentation_file} (not scored): {_names(no_prediction)}", True)
    if no_reference:
        report(f"warning: {len(no_reference)} prediction(s) without a reference.mhd under {data_root} (not scored): "
               f"{_names(no_reference)}", True)
    pairs = [(case, predictions[name]) for name, case in references.items() if name in predictions]
    if not pairs:
        raise ValueError(f"no case has both a prediction in {pred_dir} and a reference under {data_root}")
    return pairs, case_errors


def read_presence(pred_dir: Path, settings: EvaluationSettings, report: Report) -> tuple[dict[str, dict[str, float]] | None, list[str]]:
    """The presence scores of ``pred_dir/VOLUMES_CSV`` (case -> fluid -> score), None when there is no such file
    or it cannot be used (an error line); and the failed input (``[VOLUMES_CSV]`` or ``[]``)."""
    volumes_csv = Path(pred_dir) / settings.volumes_csv
    scores, failed = None, []
    if volumes_csv.is_file():
        try:
            scores = volume_metrics.read_presence_scores(volumes_csv, list(settings.fluids))
        except ValueError as error:
            report(f"error: {error}; presence scores taken from the label volumes instead", True)
            failed.append(str(volumes_csv))
    report(f"presence scores from {volumes_csv if scores is not None else 'the predicted label volumes'}", False)
    return scores, failed


def _case_rows(case: str, vendor: str, fluid_rows: list[dict], presence: Mapping[str, float]) -> list[dict]:
    """The per-case table's rows of one case (``volume_metrics.PER_CASE_COLUMNS``)."""
    return [{"case": case, "vendor": vendor, **row, "presence_score": presence[row["fluid"]]} for row in fluid_rows]


def _per_case_table(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(volume_metrics.PER_CASE_COLUMNS))


def score_cases(pairs: list[tuple[Case, Path]], scores: dict[str, dict[str, float]] | None,
                settings: EvaluationSettings, report: Report, progress: bool = False) -> tuple[pd.DataFrame, list[str], float]:
    """Scores each pair against its reference.

    Args:
        pairs: from :func:`select_pairs`.
        scores: presence scores by case and fluid (:func:`read_presence`); a case they lack, or all cases when
            None, takes its presence from its predicted label volume.
        settings: the label codes, the spacing tolerance and the presence table's name.
        report: gets one error line per prediction that could not be used, and a warning naming the cases without
            presence scores.
        progress: show a progress bar (on stderr).

    Returns:
        ``(per_case, failed, pooled_fluid_dice)``: the rows of the cases scored (columns
        ``volume_metrics.PER_CASE_COLUMNS``), the prediction files that could not be used, and the merged fluid's
        Dice pooled over the cases scored (:attr:`Evaluation.pooled_fluid_dice`).
    """
    rows, failed, no_score, counts = [], [], [], []
    for case, prediction_path in tqdm(pairs, desc="evaluate", unit="case", disable=not progress):
        try:
            fluid_rows, presence, merged = volume_metrics.evaluate_case_files(
                prediction_path, case.reference_path, settings.fluids, settings.background, settings.spacing_rtol)
        except VolumeError as error:
            report(f"error: {error}", True)
            failed.append(str(prediction_path))
            continue
        if scores is not None:
            if case.name in scores:
                presence = scores[case.name]
            else:
                no_score.append(case.name)
        rows += _case_rows(case.name, case.vendor, fluid_rows, presence)
        counts.append(merged)
    if no_score:
        report(f"warning: {len(no_score)} case(s) not in {settings.volumes_csv}, presence taken from their label volumes: "
               f"{_names(no_score)}", True)
    return _per_case_table(rows), failed, volume_metrics.pooled_dice(counts)


def summary_table(per_case: pd.DataFrame, settings: EvaluationSettings) -> pd.DataFrame:
    """evaluate.py's summary of ``per_case``: :func:`utils.evaluate.volume_metrics.summarize` by vendor and
    fluid."""
    return volume_metrics.summarize(per_case, settings.vendors, list(settings.fluids))


class _Collected:
    """The API's :data:`Report` when none is given: keeps the lines, to be returned (and warned about) at the end."""

    def __init__(self):
        self.lines: list[tuple[str, bool]] = []

    def __call__(self, line: str, problem: bool) -> None:
        self.lines.append((line, problem))

    def messages(self) -> tuple[str, ...]:
        """All the lines, and each problem given as a warning from the API's caller."""
        for line, problem in self.lines:
            if problem:
                warnings.warn(line, stacklevel=3)
        return tuple(line for line, _ in self.lines)


def score_folder(pred_dir: str | os.PathLike, settings: EvaluationSettings, data_root: str | os.PathLike,
                 split_file: str | os.PathLike | None = None, split: str | None = None, report: Report | None = None,
                 progress: bool = False) -> Evaluation:
    """Scores a prediction folder with settings already chosen (:func:`evaluation_config`), as evaluate.py does.

    Args:
        pred_dir: predict.py's output folder: ``<case>/SEGMENTATION_FILE`` (or the same name ending ``.mha`` or
            ``.nii.gz``), and ``VOLUMES_CSV`` for the presence scores when it holds one.
        settings: the model's label codes and file names and the scoring settings (:class:`EvaluationSettings`
            of the settings :func:`evaluation_config` chose).
        data_root: the folder holding the cases' ``reference.mhd``, at any depth (evaluate.py's ``DATA_ROOT``).
        split_file: a CSV with columns ``case`` and ``split``: score only the cases of ``split``.
        split: the split to score (default: ``"test"`` with a split file).
        report: gets the lines evaluate.py prints while scoring (:data:`Report`); default: collected in
            :attr:`Evaluation.messages`, each problem also given as a warning.
        progress: show a progress bar over the cases (on stderr).

    Returns:
        :class:`Evaluation` (its ``cfg`` None); a prediction that cannot be used is left out and named in
        ``failed``.

    Raises:
        FileNotFoundError, ValueError: no prediction folder or data root, an unusable split file, or no case with
            both a prediction and a reference; the message names the file.
    """
    collected = None
    if report is None:
        collected = report = _Collected()
    pred_dir, data_root = Path(pred_dir), Path(data_root)
    if split_file is not None and split is None:
        split = "test"
    if split is not None and split_file is None:
        raise ValueError(f"split={split!r} needs a split_file (a CSV with columns case and split)")
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"{pred_dir}: prediction folder is not a folder")
    try:
        pairs, unusable = select_pairs(pred_dir, settings, data_root,
                                       None if split_file is None else Path(split_file), split, report)
    except (FileNotFoundError, ValueError):
        if collected is not None:
            collected.messages()  # the warnings about unmatched cases tell why none is left
        raise
    scores, failed = read_presence(pred_dir, settings, report)
    per_case, failed_cases, pooled_fluid_dice = score_cases(pairs, scores, settings, report, progress)
    presence_source = str(pred_dir / settings.volumes_csv) if scores is not None else "the predicted label volumes"
    return Evaluation(per_case, summary_table(per_case, settings), None,
                      tuple(failed + failed_cases + [line.split(": ")[0] for line in unusable]),
                      collected.messages() if collected is not None else (), presence_source=presence_source,
                      pooled_fluid_dice=pooled_fluid_dice)


def _local_config(overrides: Mapping[str, Any]) -> types.SimpleNamespace:
    return load_config(keyword_overrides(overrides))


def evaluate_folder(pred_dir: str | os.PathLike, data_root: str | os.PathLike | None = None,
                    split_file: str | os.PathLike | None = None, split: str | None = None,
                    **overrides: Any) -> Evaluation:
    """Scores predict.py's output folder against the references under ``data_root``, as evaluate.py does (the same
    cases, tables, failed inputs and messages), writing nothing.

    Args:
        pred_dir: predict.py's output folder (see :func:`score_folder`); its ``config.json`` gives the model's
            settings.
        data_root: the folder holding the cases' ``reference.mhd``, at any depth (default: ``DATA_ROOT``).
        split_file: a CSV with columns ``case`` and ``split``: score only the cases of ``split``.
        split: the split to score (default: ``"test"`` with a split file).
        **overrides: settings of config.py by name, as evaluate.py's ``--set`` (e.g. ``SPACING_RTOL=1e-3``): with a
            ``config.json`` in ``pred_dir`` only ``EVALUATION_LOCAL_SETTINGS`` take effect, any other that differs
            from the model's is ignored with a note; without one, all do.

    Returns:
        :class:`Evaluation`; its notes, warnings and error lines are also given as warnings.

    Raises:
        ConfigError: an unknown setting (the nearest name suggested) or a value of the wrong type.
        FileNotFoundError, ValueError: a damaged ``config.json``, no prediction folder or data root, an unusable
            split file, or no case with both a prediction and a reference; the message names the file.
    """
    cfg, notes, source = evaluation_config(Path(pred_dir), _local_config(overrides), list(overrides))
    collected = _Collected()
    for note in notes:
        collected(f"note: {note}", True)
    try:
        result = score_folder(pred_dir, EvaluationSettings.from_config(cfg),
                              data_root if data_root is not None else cfg.DATA_ROOT, split_file, split, collected)
    except (FileNotFoundError, ValueError):
        collected.messages()  # the notes, and the warnings about unmatched cases that tell why none is left
        raise
    return dataclasses.replace(result, cfg=cfg, messages=collected.messages(), settings_source=source)


def _given_presence(case: str, scores: Any, fluids: list[str]) -> dict[str, float]:
    """The presence scores given for ``case``, checked: a number in [0, 1] for each fluid."""
    checked = {}
    for fluid in fluids:
        value = scores.get(fluid) if isinstance(scores, Mapping) else None
        if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating))
                or not 0 <= value <= 1):
            raise ValueError(f"presence[{case!r}][{fluid!r}] is {value!r}; expected a number in [0, 1] for each of "
                             f"{', '.join(fluids)}")
        checked[fluid] = float(value)
    return checked


def evaluate_arrays(predictions: Mapping[str, np.ndarray | tuple[np.ndarray, Geometry]],
                    references: Mapping[str, tuple[np.ndarray, Geometry]], vendors: Mapping[str, str],
                    presence: Mapping[str, Mapping[str, float]] | None = None,
                    settings_from: str | os.PathLike | None = None, **overrides: Any) -> Evaluation:
    """Scores label arrays against reference arrays as evaluate.py scores the files holding them.

    Args:
        predictions: case name -> ``(z, y, x)`` integer label volume (0 background, then the codes of ``FLUIDS``:
            IRF 1, SRF 2, PED 3), on its reference's grid; or ``(labels, geometry)`` (as
            :func:`utils.io.mhd_io.read_volume` returns it), whose size and spacing are checked against the
            reference's (``SPACING_RTOL``) as evaluate.py checks a file's.
        references: case name -> ``(labels, geometry)`` of its reference: the same codes, spacing ``(x, y, z)`` mm
            (the voxel volume of the volumes in mm³); the same cases as ``predictions``.
        vendors: case name -> vendor, for the summary's rows per vendor (ordered as ``VENDORS``).
        presence: case name -> fluid name -> presence score in [0, 1] (predict.py's ``volumes.csv``,
            :func:`utils.evaluate.volume_metrics.read_presence_scores`); a case it lacks (with a warning, as
            evaluate.py warns of a case ``volumes.csv`` lacks), or every case when None, takes 1.0 where its prediction
            holds the fluid, else 0.0.
        settings_from: a prediction folder whose ``config.json`` gives the model's settings, as evaluate.py takes
            them; None: config.py's.
        **overrides: settings by name, as :func:`evaluate_folder` takes them.

    Returns:
        :class:`Evaluation`, its rows in the order of ``predictions``.

    Raises:
        ConfigError: an unknown setting or a value of the wrong type.
        ValueError: cases that differ between the mappings, a presence score missing for a fluid or outside
            [0, 1], a damaged ``config.json``.
        VolumeError: a label volume with other codes, or a prediction not on its reference's grid; the message
            names the case.
    """
    local_cfg = _local_config(overrides)
    if settings_from is None:
        cfg, notes, source = local_cfg, [], "config.py"
    else:
        cfg, notes, source = evaluation_config(Path(settings_from), local_cfg, list(overrides))
    collected = _Collected()
    for note in notes:
        collected(f"note: {note}", True)
    names = list(predictions)
    for what, mapping in (("references", references), ("vendors", vendors)):
        if set(mapping) != set(names):
            raise ValueError(f"{what} has the cases {_names(mapping) or 'none'}, predictions "
                             f"{_names(names) or 'none'}; expected the same cases in both")
    settings = EvaluationSettings.from_config(cfg)
    fluids = list(settings.fluids)
    allowed = [settings.background, *settings.fluids.values()]
    rows, no_score, counts = [], [], []
    for name in names:
        if not (isinstance(references[name], tuple) and len(references[name]) == 2
                and isinstance(references[name][1], Geometry)):
            raise ValueError(f"references[{name!r}]: expected (labels, geometry), as read_volume returns them; got "
                             f"{type(references[name]).__name__}")
        reference, reference_geometry = references[name]
        reference = np.asarray(reference)
        if reference.ndim != 3:
            raise ValueError(f"case {name} reference: shape {reference.shape}; expected (z, y, x) = (B-scans, depth, "
                             f"width)")
        check_labels(reference, allowed, f"case {name} reference")
        prediction, prediction_geometry = predictions[name], reference_geometry
        if isinstance(prediction, tuple):
            if len(prediction) != 2 or not isinstance(prediction[1], Geometry):
                raise ValueError(f"predictions[{name!r}]: expected labels or (labels, geometry); got a tuple of "
                                 f"{len(prediction)}")
            prediction, prediction_geometry = prediction
        fluid_rows, labels_presence, merged = volume_metrics.score_labels(
            np.asarray(prediction), prediction_geometry, reference, reference_geometry, settings.fluids,
            settings.background, settings.spacing_rtol, f"case {name} prediction")
        scores = labels_presence
        if presence is not None:
            if name in presence:
                scores = _given_presence(name, presence[name], fluids)
            else:
                no_score.append(name)
        rows += _case_rows(name, vendors[name], fluid_rows, scores)
        counts.append(merged)
    if no_score:
        collected(f"warning: {len(no_score)} case(s) not in presence, presence taken from their label volumes: "
                  f"{_names(no_score)}", True)
    per_case = _per_case_table(rows)
    return Evaluation(per_case, summary_table(per_case, settings), cfg, messages=collected.messages(),
                      settings_source=source,
                      presence_source="the predicted label volumes" if presence is None else "the given scores",
                      pooled_fluid_dice=volume_metrics.pooled_dice(counts))
