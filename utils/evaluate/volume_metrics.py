"""The RETOUCH challenge metrics on whole label volumes: Dice, absolute volume difference, detection ROC-AUC.

Label volumes are ``(z, y, x)`` integer arrays (uint8 in RETOUCH): the ``BACKGROUND`` code (0) and the codes of
``FLUIDS`` (IRF 1, SRF 2, PED 3); every function takes them, and the spacing tolerance ``SPACING_RTOL``, from the
caller's config, so ``--set`` reaches them. Volumes are in mm³: voxel count x voxel volume, the voxel volume taken
from the reference header's spacing (a prediction must have the reference's size and, within ``SPACING_RTOL``,
its spacing).

Dice here is :func:`dice_from_counts` on the integer voxel counts of one case and fluid; training scores patches
with its own Dice on count tensors (``utils/train/metrics.py`` ``dice_score``, whose empty case is a parameter).

Per case and fluid:

- Dice ``2 TP / (2 TP + FP + FN)`` over voxels, in [0, 1].
- Absolute volume difference ``|predicted - reference|`` in mm³, and both volumes.
- A fluid is *present* in a volume when at least one voxel carries its code.

**A fluid absent from both prediction and reference** (common: IRF is absent from 15 of the 70 RETOUCH training
cases, SRF from 33, PED from 37): Dice is 0/0, undefined, and is stored as NaN; the volume difference is 0.
Summaries report Dice two ways:

- ``dice_mean_with_fluid``: the mean over cases whose reference *or* prediction holds the fluid, i.e. the NaN
  cases are left out. This is the stricter number and does not reward empty predictions.
- ``dice_mean_all``: the mean over all cases, each NaN counted as 1.0, since an empty prediction of an empty
  reference is perfect.

A prediction holding a fluid the reference lacks has Dice 0 and counts in both means (and vice versa).

**Detection ROC-AUC** per fluid over cases: a presence score in [0, 1] per case against whether the reference
holds the fluid, by the Mann-Whitney statistic (ties count 1/2). The AUC is undefined, NaN, when all cases of the
group are positive or all negative (and when the group is empty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from utils.io.files import read_csv_table
from utils.io.mhd_io import Geometry, VolumeError, check_labels, read_volume  # check_labels: also prepare's
from utils.io.tables import presence_column

PER_CASE_COLUMNS = ("case", "vendor", "fluid", "dice", "abs_volume_diff_mm3", "reference_volume_mm3",
                    "predicted_volume_mm3", "reference_present", "predicted_present", "presence_score")
SUMMARY_COLUMNS = ("vendor", "fluid", "n_cases", "n_reference_present", "n_with_fluid", "dice_mean_with_fluid",
                   "dice_mean_reference_present", "dice_mean_all", "abs_volume_diff_mean_mm3", "auc")
ALL_VENDORS = "all"  # the vendor column of the summary rows over every case


# --------------------------------------------------------------------------------------------------------------
# Pure functions on arrays
# --------------------------------------------------------------------------------------------------------------
def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """Dice ``2 TP / (2 TP + FP + FN)`` of one case and fluid from its voxel counts.

    Args:
        tp, fp, fn: true positive, false positive and false negative voxel counts, ints >= 0.

    Returns:
        A float in [0, 1]; NaN when the fluid is in neither volume (all counts 0).
    """
    denominator = 2 * tp + fp + fn
    return float("nan") if denominator == 0 else 2.0 * tp / denominator


def check_same_grid(prediction_shape: tuple[int, ...], prediction_geometry: Geometry,
                    reference_shape: tuple[int, ...], reference_geometry: Geometry, prediction_name: str | Path,
                    spacing_rtol: float) -> None:
    """Checks that a prediction lies on its reference's voxel grid: same ``(z, y, x)`` size, same spacing.

    Args:
        prediction_shape, reference_shape: ``(z, y, x)`` sizes.
        prediction_geometry, reference_geometry: their geometries (spacing ``(x, y, z)`` in mm).
        prediction_name: the prediction file, for the message.
        spacing_rtol: relative tolerance on each spacing component (``SPACING_RTOL``: headers written by different
            tools print the same spacing with different numbers of digits).

    Raises:
        VolumeError: naming ``prediction_name``, what it has and what the reference has.
    """
    if tuple(prediction_shape) != tuple(reference_shape):
        raise VolumeError(f"{prediction_name}: size (z, y, x) {tuple(prediction_shape)} differs from its "
                          f"reference's {tuple(reference_shape)}")
    if not np.allclose(prediction_geometry.spacing_mm, reference_geometry.spacing_mm, rtol=spacing_rtol, atol=0):
        raise VolumeError(f"{prediction_name}: spacing (x, y, z) {prediction_geometry.spacing_mm} mm differs from "
                          f"its reference's {reference_geometry.spacing_mm} mm (relative tolerance {spacing_rtol})")


def case_fluid_metrics(prediction: np.ndarray, reference: np.ndarray, voxel_volume_mm3: float,
                       fluids: Mapping[str, int]) -> list[dict]:
    """Dice and volumes of each fluid for one case.

    Args:
        prediction: ``(z, y, x)`` integer label volume.
        reference: ``(z, y, x)`` integer label volume of the same shape.
        voxel_volume_mm3: volume of one voxel in mm³ (from the reference header), > 0.
        fluids: fluid name -> label code (``FLUIDS``).

    Returns:
        One dict per fluid, in the order of ``fluids``, with ``fluid`` (name), ``dice`` (float in [0, 1], NaN when
        the fluid is in neither volume), ``abs_volume_diff_mm3``, ``reference_volume_mm3``,
        ``predicted_volume_mm3`` (floats, mm³), ``reference_present`` and ``predicted_present`` (bool).

    Raises:
        ValueError: shapes differ or the voxel volume is not positive.
    """
    if prediction.shape != reference.shape:
        raise ValueError(f"case_fluid_metrics: prediction shape {prediction.shape} differs from reference shape "
                         f"{reference.shape}")
    if not voxel_volume_mm3 > 0:
        raise ValueError(f"case_fluid_metrics: voxel_volume_mm3 must be > 0, got {voxel_volume_mm3}")
    rows = []
    for fluid, code in fluids.items():
        predicted, expected = prediction == code, reference == code
        tp = int(np.count_nonzero(predicted & expected))
        n_predicted, n_reference = int(np.count_nonzero(predicted)), int(np.count_nonzero(expected))
        rows.append({
            "fluid": fluid,
            "dice": dice_from_counts(tp, n_predicted - tp, n_reference - tp),
            "abs_volume_diff_mm3": abs(n_predicted - n_reference) * voxel_volume_mm3,
            "reference_volume_mm3": n_reference * voxel_volume_mm3,
            "predicted_volume_mm3": n_predicted * voxel_volume_mm3,
            "reference_present": n_reference > 0,
            "predicted_present": n_predicted > 0,
        })
    return rows


def merged_fluid_counts(prediction: np.ndarray, reference: np.ndarray, codes: Sequence[int]) -> tuple[int, int, int]:
    """Voxel counts of one case with every fluid merged (a voxel is fluid when it holds any of ``codes``, its type
    ignored): ``(true positives, predicted, reference)``, ints >= 0; :func:`pooled_dice` sums them over cases."""
    predicted, expected = np.isin(prediction, codes), np.isin(reference, codes)
    return (int(np.count_nonzero(predicted & expected)), int(np.count_nonzero(predicted)),
            int(np.count_nonzero(expected)))


def pooled_dice(counts: Sequence[tuple[int, int, int]]) -> float:
    """Dice pooled over cases: ``sum(2 TP) / sum(|P| + |G|)`` of their :func:`merged_fluid_counts`, not a mean of
    per-case Dice (so a case weighs by its fluid); in [0, 1], NaN when no case holds fluid in either volume."""
    tp, predicted, reference = (sum(case[i] for case in counts) for i in range(3))
    return dice_from_counts(tp, predicted - tp, reference - tp)


def presence_from_labels(prediction: np.ndarray, fluids: Mapping[str, int]) -> dict[str, float]:
    """Presence scores of a method that gives only label volumes: 1.0 where the volume holds the fluid, else 0.0.

    Args:
        prediction: integer label volume, any shape.
        fluids: fluid name -> label code (``FLUIDS``).
    """
    return {fluid: float(np.any(prediction == code)) for fluid, code in fluids.items()}


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve by the Mann-Whitney statistic, tied scores counting 1/2.

    ``AUC = (sum of the positives' ranks - P (P + 1) / 2) / (P N)`` with average ranks for ties: the share of
    (positive, negative) pairs in which the positive scores higher.

    Args:
        scores: ``(n,)`` finite floats, higher = more likely positive.
        labels: ``(n,)`` bools (or 0/1): whether each case is positive.

    Returns:
        The AUC in [0, 1]; NaN when there are no positives or no negatives (including ``n = 0``).

    Raises:
        ValueError: lengths differ, a score is not finite, or a label is not 0/1.
    """
    scores = np.asarray(scores, dtype=float).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"roc_auc: {scores.size} scores but {labels.size} labels")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"roc_auc: scores must be finite, got {scores[~np.isfinite(scores)][:5].tolist()}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError(f"roc_auc: labels must be 0/1 or bool, got {np.unique(labels)[:5].tolist()}")
    positive = labels.astype(bool)
    n_positive, n_negative = int(positive.sum()), int((~positive).sum())
    if n_positive == 0 or n_negative == 0:
        return float("nan")
    ranks = rankdata(scores)  # ties get their average rank
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def summarize(per_case: pd.DataFrame, vendors: Sequence[str], fluids: Sequence[str]) -> pd.DataFrame:
    """Means per vendor and over all cases, per fluid.

    Args:
        per_case: one row per case and fluid with the columns ``PER_CASE_COLUMNS`` (as :func:`case_fluid_metrics`
            rows plus ``case``, ``vendor`` and ``presence_score``).
        vendors: the order of the vendor rows (``VENDORS``); vendors without cases get no rows, vendors not listed
            come after them in sorted order.
        fluids: the fluid names, in the order of the fluid rows (the keys of ``FLUIDS``).

    Returns:
        One row per vendor (then ``ALL_VENDORS``) and fluid with the columns ``SUMMARY_COLUMNS``: ``n_cases``,
        ``n_reference_present`` (cases whose reference holds the fluid), ``n_with_fluid`` (whose reference or
        prediction holds it), ``dice_mean_with_fluid`` (mean over those; NaN if none),
        ``dice_mean_reference_present`` (mean over the cases whose reference holds the fluid; NaN if none: how well
        the fluid is outlined where it is, without the cases that only hold false positives), ``dice_mean_all`` (mean
        over all cases, a fluid in neither volume counting 1.0), ``abs_volume_diff_mean_mm3`` and ``auc``
        (:func:`roc_auc` of ``presence_score`` against ``reference_present``).
    """
    vendors, fluids = list(vendors), list(fluids)
    present = list(pd.unique(per_case["vendor"])) if len(per_case) else []
    groups = [v for v in vendors if v in present] + sorted(v for v in present if v not in vendors)
    rows = []
    for vendor, frame in [(v, per_case[per_case["vendor"] == v]) for v in groups] + [(ALL_VENDORS, per_case)]:
        for fluid in fluids:
            part = frame[frame["fluid"] == fluid]
            dice = part["dice"].to_numpy(dtype=float)
            defined = np.isfinite(dice)
            reference = part["reference_present"].to_numpy(dtype=bool)
            rows.append({
                "vendor": vendor,
                "fluid": fluid,
                "n_cases": len(part),
                "n_reference_present": int(part["reference_present"].astype(bool).sum()),
                "n_with_fluid": int(defined.sum()),
                "dice_mean_with_fluid": float(dice[defined].mean()) if defined.any() else float("nan"),
                "dice_mean_reference_present": (float(dice[reference].mean()) if reference.any() else float("nan")),
                "dice_mean_all": float(np.where(defined, dice, 1.0).mean()) if len(part) else float("nan"),
                "abs_volume_diff_mean_mm3": float(part["abs_volume_diff_mm3"].mean()) if len(part) else float("nan"),
                "auc": roc_auc(part["presence_score"].to_numpy(dtype=float),
                               part["reference_present"].to_numpy(dtype=bool)),
            })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def score_labels(prediction: np.ndarray, prediction_geometry: Geometry, reference: np.ndarray,
                 reference_geometry: Geometry, fluids: Mapping[str, int], background: int, spacing_rtol: float,
                 prediction_name: str | Path = "prediction") -> tuple[list[dict], dict[str, float], tuple[int, int, int]]:
    """Scores a predicted label volume against its reference, whose labels the caller has checked
    (:func:`utils.io.mhd_io.check_labels`).

    Args:
        prediction: ``(z, y, x)`` integer label volume: ``background`` and the codes of ``fluids`` only.
        prediction_geometry: its geometry (spacing ``(x, y, z)`` mm).
        reference: ``(z, y, x)`` integer label volume, checked.
        reference_geometry: its geometry; its spacing gives the voxel volume.
        fluids: fluid name -> label code (``FLUIDS``).
        background: the background code (``BACKGROUND``).
        spacing_rtol: relative spacing tolerance (``SPACING_RTOL``), see :func:`check_same_grid`.
        prediction_name: names the prediction in error messages.

    Returns:
        ``(rows, presence, merged)``: the :func:`case_fluid_metrics` rows, :func:`presence_from_labels` of the
        prediction (the presence scores to use when the method gives none), and :func:`merged_fluid_counts`.

    Raises:
        VolumeError: a prediction not on the reference's grid, or holding other label values; the message names
            ``prediction_name``.
    """
    check_same_grid(prediction.shape, prediction_geometry, reference.shape, reference_geometry, prediction_name,
                    spacing_rtol)
    check_labels(prediction, [background, *fluids.values()], prediction_name)
    rows = case_fluid_metrics(prediction, reference, reference_geometry.voxel_volume_mm3, fluids)
    return rows, presence_from_labels(prediction, fluids), merged_fluid_counts(prediction, reference,
                                                                               list(fluids.values()))


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------
def evaluate_case_files(prediction_path: str | Path, reference_path: str | Path, fluids: Mapping[str, int],
                        background: int, spacing_rtol: float
                        ) -> tuple[list[dict], dict[str, float], tuple[int, int, int]]:
    """Reads a predicted and a reference label volume and scores them (:func:`score_labels`).

    Args:
        prediction_path: the predicted ``segmentation.mhd``.
        reference_path: the case's ``reference.mhd``; its spacing gives the voxel volume.
        fluids: fluid name -> label code (``FLUIDS``).
        background: the background code (``BACKGROUND``).
        spacing_rtol: relative spacing tolerance (``SPACING_RTOL``), see :func:`check_same_grid`.

    Returns:
        :func:`score_labels`'s ``(rows, presence, merged)``.

    Raises:
        VolumeError: an unreadable volume, other label values, or a prediction not on the reference's grid;
            the message names the file.
    """
    reference, reference_geometry = read_volume(reference_path)
    check_labels(reference, [background, *fluids.values()], reference_path)  # before reading the prediction
    prediction, prediction_geometry = read_volume(prediction_path)
    return score_labels(prediction, prediction_geometry, reference, reference_geometry, fluids, background,
                        spacing_rtol, prediction_path)


def read_presence_scores(path: str | Path, fluids: Sequence[str]) -> dict[str, dict[str, float]]:
    """Presence scores from a prediction folder's ``volumes.csv``.

    Args:
        path: CSV with a ``case`` column and a ``<fluid>_presence`` column per fluid (other columns ignored).
        fluids: fluid names (the keys of ``FLUIDS``).

    Returns:
        case -> fluid -> score in [0, 1].

    Raises:
        ValueError: unreadable file, missing columns, a case listed twice, or a score that is not a number in
            [0, 1]; the message names the file.
    """
    fluids = list(fluids)
    try:
        table = read_csv_table(path, dtype={"case": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise ValueError(f"{path}: cannot read it as CSV ({str(error).strip().splitlines()[0]})") from None
    columns = ["case"] + [presence_column(fluid) for fluid in fluids]
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; expected at least {', '.join(columns)}")
    duplicated = table["case"][table["case"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path}: case(s) listed more than once: {', '.join(duplicated)}")
    scores = table[columns[1:]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~(np.isfinite(scores) & (scores >= 0) & (scores <= 1))
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise ValueError(f"{path}: {columns[1 + column]} of case {table['case'].iloc[row]} is "
                         f"{table[columns[1 + column]].iloc[row]}; expected a number in [0, 1]")
    return {case: dict(zip(fluids, map(float, values))) for case, values in zip(table["case"], scores)}
