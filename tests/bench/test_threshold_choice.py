"""bench/threshold_choice.py: each fold's fluid threshold chosen on the other folds (result JSONs made up here)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
CONFIGS = ("improved_strips_wide_tta_thr30", "improved_strips_wide_tta_thr50", "improved_strips_wide_tta_thr70")


@pytest.fixture
def choice(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("threshold_choice")


def _case(tp: int, pred: int, ref: int) -> dict:
    """A case's measures as bench/quality_measures.case_measures gives them (one B-scan, 1 mm² pixels)."""
    return {"n_bscans": 1, "tp": tp, "pred": pred, "ref": ref, "cols_tp": tp, "cols_pred": pred, "cols_ref": ref,
            "dice": 2 * tp / (pred + ref), "abs_volume_diff_mm3": 0.0, "pred_area_mm2": pred, "ref_area_mm2": ref}


def _write(out: Path, config: str, seed: int, folds: dict[str, tuple[int, int, int]], epochs: int = 15):
    result = {"version": 2, "dataset": "real", "config": config, "seed": seed, "smoke": False, "epochs": epochs,
              "budget_minutes": 0.0, "folds": {name: {"cases": {f"{name}-case": _case(*counts)}}
                                               for name, counts in folds.items()}, "pooled": {}}
    path = out / "results" / f"real-{config}-{epochs}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def test_each_fold_takes_the_threshold_best_on_the_other_fold(choice, tmp_path, capsys):
    out = tmp_path / "quality"
    # (tp, pred, ref) per fold: fold1 is best at 0.3 (Dice 0.9), fold2 at 0.7 (Dice 0.9)
    _write(out, CONFIGS[0], 0, {"fold1": (90, 100, 100), "fold2": (40, 100, 100)})
    _write(out, CONFIGS[1], 0, {"fold1": (60, 100, 100), "fold2": (60, 100, 100)})
    _write(out, CONFIGS[2], 0, {"fold1": (30, 100, 100), "fold2": (90, 100, 100)})
    _write(out, CONFIGS[2], 0, {"fold1": (0, 100, 100), "fold2": (0, 100, 100)}, epochs=30)  # another budget
    assert choice.main(["--out", str(out), "--configs", ",".join(CONFIGS)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # fold1 at fold2's best (0.7): 30 TP; fold2 at fold1's best (0.3): 40 TP -> 2 x 70 / 400
    assert lines[0].startswith("| seed | t = 0.3 | t = 0.5 | t = 0.7 | chosen per fold (other folds) |")
    assert lines[2] == "| 0 | 0.650 | 0.600 | 0.600 | fold1 0.7, fold2 0.3 | 0.350 | 1.00 |"


def test_a_seed_missing_a_threshold_is_left_out_and_none_left_is_an_error(choice, tmp_path, capsys):
    out = tmp_path / "quality"
    _write(out, CONFIGS[0], 1, {"fold1": (90, 100, 100), "fold2": (40, 100, 100)})
    _write(out, CONFIGS[1], 1, {"fold1": (60, 100, 100), "fold2": (60, 100, 100)})
    assert choice.main(["--out", str(out), "--configs", ",".join(CONFIGS)]) == 1
    assert capsys.readouterr().err.startswith(f"error: no seed under {out} has every one of")


@pytest.mark.parametrize("configs, message", [
    ("improved_strips_wide_tta_thr30,nonsense", "'nonsense' is not a bench/quality.py config"),
    ("improved_strips_wide_tta_thr30", "at least two FLUID_THRESHOLD values"),
])
def test_bad_configs_are_one_error_line(choice, tmp_path, capsys, configs, message):
    assert choice.main(["--out", str(tmp_path), "--configs", configs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_the_default_configs_differ_only_in_their_threshold(choice):
    import quality
    names = choice.DEFAULT_CONFIGS.split(",")
    assert sorted(choice.config_threshold(name) for name in names) == [0.3, 0.4, 0.5, 0.6, 0.7]
    assert len({quality.trained_as(name) for name in names}) == 1
    stripped = {tuple(item for item in quality.CONFIGS[name]["predict"] if not item.startswith("FLUID_THRESHOLD="))
                for name in names}
    assert stripped == {tuple(quality.CONFIGS["improved_strips_wide_tta"]["predict"])}
