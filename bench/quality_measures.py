"""Fluid measures of predicted label volumes against their references, for bench/quality.py.

Fluid is merged: a voxel is fluid when its label is > 0, in the prediction and in the reference alike (the real
development set's masks do not tell fluid types apart). All sums run over every B-scan of the cases given, so a
pooled Dice is ``sum(2 TP) / sum(|P| + |G|)`` over those B-scans, not a mean of per-B-scan or per-case Dice.

Arrays are ``(z, y, x)`` = (B-scan, depth, width); SimpleITK spacing is ``(x, y, z)`` in mm.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402


class MeasureError(ValueError):
    """A label volume that cannot be read or does not match its reference; the message names the file."""


def read_labels(path: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Reads a label volume.

    Returns:
        ``(labels, spacing_mm)``: integer array ``(z, y, x)`` and the SimpleITK spacing ``(x, y, z)`` in mm.

    Raises:
        MeasureError: missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise MeasureError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise MeasureError(f"{path}: cannot read the volume ({str(error).strip().splitlines()[-1]})") from None
    return sitk.GetArrayFromImage(image), tuple(float(v) for v in image.GetSpacing())


def dice(tp: int, n_pred: int, n_ref: int) -> float | None:
    """``2 TP / (|P| + |G|)`` in [0, 1]; None when neither holds fluid (0/0: undefined, left out of means)."""
    total = n_pred + n_ref
    return 2.0 * tp / total if total else None


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; None when the denominator is 0."""
    return numerator / denominator if denominator else None


def read_fluid_masks(prediction_path: str | Path, reference_path: str | Path
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """A case's predicted and reference fluid, merged (label > 0), checked against each other.

    Returns:
        ``(pred, ref, spacing_mm)``: bool arrays ``(z, y, x)`` and the reference's SimpleITK spacing ``(x, y, z)``.

    Raises:
        MeasureError: unreadable volume, or a prediction of another size than its reference, or of a spacing that
            differs from the reference's by more than ``config.SPACING_RTOL`` (relative, per component).
    """
    pred_labels, pred_spacing = read_labels(prediction_path)
    ref_labels, ref_spacing = read_labels(reference_path)
    if pred_labels.shape != ref_labels.shape:
        raise MeasureError(f"{prediction_path}: size (z, y, x) {pred_labels.shape} differs from the reference's "
                           f"{ref_labels.shape} ({reference_path})")
    if not np.allclose(pred_spacing, ref_spacing, rtol=config.SPACING_RTOL, atol=0):
        raise MeasureError(f"{prediction_path}: spacing (x, y, z) {pred_spacing} mm differs from the reference's "
                           f"{ref_spacing} mm ({reference_path})")
    return pred_labels > 0, ref_labels > 0, ref_spacing


def case_measures(prediction_path: str | Path, reference_path: str | Path,
                  columns: tuple[int, int]) -> dict:
    """Counts and measures of one case, fluid merged (label > 0): :func:`mask_measures` of its files.

    Args:
        prediction_path: the predicted ``segmentation.mhd``.
        reference_path: the case's ``reference.mhd``; its spacing gives areas and volumes.
        columns: as :func:`mask_measures`.

    Raises:
        MeasureError: as :func:`read_fluid_masks`.
    """
    pred, ref, ref_spacing = read_fluid_masks(prediction_path, reference_path)
    return mask_measures(pred, ref, ref_spacing, columns)


def mask_measures(pred: np.ndarray, ref: np.ndarray, ref_spacing: tuple[float, float, float],
                  columns: tuple[int, int]) -> dict:
    """Counts and measures of one case's fluid masks.

    Args:
        pred, ref: ``(z, y, x)`` bool, the predicted and the reference fluid, of one shape.
        ref_spacing: the reference's spacing ``(x, y, z)`` mm: it gives areas and volumes.
        columns: ``(start, stop)`` of the column range (x, width) of the restricted counts, stop excluded; clipped
            to the B-scan width.

    Returns:
        JSON-ready dict: voxel counts ``tp``, ``pred``, ``ref`` and the same in the column range (``cols_tp``,
        ``cols_pred``, ``cols_ref``), ``n_bscans``, ``spacing_mm`` (x, y, z), ``voxel_mm3``, ``dice``,
        ``dice_cols`` (None when 0/0), ``pred_area_mm2`` and ``ref_area_mm2`` (fluid area summed over the
        B-scans), ``pred_volume_mm3``, ``ref_volume_mm3``, ``abs_volume_diff_mm3`` and
        ``area_ratio`` (predicted / reference fluid pixels, None without reference fluid).
    """
    start, stop = (min(max(column, 0), ref.shape[-1]) for column in columns)  # clipped to the B-scan width
    counts = {"tp": int(np.count_nonzero(pred & ref)), "pred": int(np.count_nonzero(pred)),
              "ref": int(np.count_nonzero(ref)),
              "cols_tp": int(np.count_nonzero(pred[..., start:stop] & ref[..., start:stop])),
              "cols_pred": int(np.count_nonzero(pred[..., start:stop])),
              "cols_ref": int(np.count_nonzero(ref[..., start:stop]))}
    voxel_mm3 = float(np.prod(ref_spacing))
    pixel_mm2 = ref_spacing[0] * ref_spacing[1]  # one pixel of a B-scan: x by y
    return {"n_bscans": int(ref.shape[0]), "spacing_mm": list(ref_spacing), "voxel_mm3": voxel_mm3, **counts,
            "pred_area_mm2": counts["pred"] * pixel_mm2, "ref_area_mm2": counts["ref"] * pixel_mm2,
            "dice": dice(counts["tp"], counts["pred"], counts["ref"]),
            "dice_cols": dice(counts["cols_tp"], counts["cols_pred"], counts["cols_ref"]),
            "pred_volume_mm3": counts["pred"] * voxel_mm3, "ref_volume_mm3": counts["ref"] * voxel_mm3,
            "abs_volume_diff_mm3": abs(counts["pred"] - counts["ref"]) * voxel_mm3,
            "area_ratio": ratio(counts["pred"], counts["ref"])}


def pooled_measures(cases: list[dict]) -> dict:
    """Measures over all B-scans of several cases (one fold's test cases, or all folds' together).

    Args:
        cases: :func:`case_measures` results.

    Returns:
        ``dice_pooled`` and ``dice_pooled_cols`` (sums of 2 TP over sums of |P| + |G|; None when 0/0),
        ``dice_per_patient_mean`` (mean of the defined per-case Dice), ``abs_volume_diff_mean_mm3`` (mean over
        cases), ``area_ratio`` (summed predicted over summed reference fluid area in mm^2 of the B-scans; the pixel
        count ratio when all cases share one pixel size) and ``n_cases``, ``n_bscans``.
    """
    def total(key: str) -> int:
        return sum(case[key] for case in cases)

    per_patient = [case["dice"] for case in cases if case["dice"] is not None]
    return {
        "n_cases": len(cases),
        "n_bscans": total("n_bscans"),
        "dice_pooled": dice(total("tp"), total("pred"), total("ref")),
        "dice_pooled_cols": dice(total("cols_tp"), total("cols_pred"), total("cols_ref")),
        "dice_per_patient_mean": float(np.mean(per_patient)) if per_patient else None,
        "abs_volume_diff_mean_mm3": float(np.mean([case["abs_volume_diff_mm3"] for case in cases])) if cases
        else None,
        "area_ratio": ratio(sum(case["pred_area_mm2"] for case in cases),
                            sum(case["ref_area_mm2"] for case in cases)),
    }
