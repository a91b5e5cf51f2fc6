"""bench/quality_curve.py: Dice against the budget in epochs, from result JSONs (made up here)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def curve(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("quality_curve")


def _write(out: Path, config: str, seed: int, epochs: int, dice: float, minutes: float, cap: float = 0.0):
    result = {"version": 2, "dataset": "real", "config": config, "seed": seed, "smoke": False, "epochs": epochs,
              "budget_minutes": cap, "machine": "CPU test, 2 cores, bf16", "folds": {},
              "pooled": {"dice_pooled": dice, "train_minutes_per_fold_mean": minutes}}
    path = out / "results" / f"real-{config}-{epochs}-{cap}-seed{seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result))


def test_the_curve_holds_each_budget_with_its_seeds_and_minutes(curve, tmp_path, capsys):
    out = tmp_path / "quality"
    _write(out, "improved", 0, 15, 0.60, 14.0)
    _write(out, "improved", 1, 15, 0.64, 16.0)
    _write(out, "improved", 0, 30, 0.70, 30.0)
    _write(out, "improved", 0, 15, 0.10, 5.0, cap=5.0)  # a wall-clock cap: not on the curve
    _write(out, "other", 0, 15, 0.20, 15.0)  # another config: not asked for
    png = tmp_path / "docs" / "curve.png"
    assert curve.main(["--out", str(out), "--configs", "improved", "--png", str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "| improved | 15 | 2 | 0.600 / 0.640 | 0.620 | 15.0 |" in lines
    assert "| improved | 30 | 1 | 0.700 | 0.700 | 30.0 |" in lines
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_matching_result_is_one_error_line(curve, tmp_path, capsys):
    assert curve.main(["--out", str(tmp_path), "--configs", "improved", "--png", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no uncapped real result of improved under {tmp_path}"]
    assert not (tmp_path / "c.png").exists()


def test_results_of_an_older_version_are_named_not_tabled(curve, tmp_path, capsys):
    out = tmp_path / "quality"
    _write(out, "improved", 0, 15, 0.60, 14.0)
    old = out / "results" / "real-improved-seed9.json"
    old.write_text(json.dumps({"version": 1, "dataset": "real", "config": "improved", "seed": 9, "folds": {},
                               "pooled": {}, "budget_minutes": 15.0}))
    assert curve.main(["--out", str(out), "--configs", "improved", "--png", str(tmp_path / "c.png")]) == 0
    assert f"error: {old}: cannot be read (made by an older bench/quality.py" in capsys.readouterr().err


def test_an_ensemble_sits_at_its_models_epochs_together(curve, tmp_path, capsys):
    out = tmp_path / "quality"
    _write(out, "ens", 0, 15, 0.70, 30.0)
    path = next((out / "results").glob("*.json"))
    path.write_text(path.read_text().replace('"epochs": 15', '"epochs": 15, "ensemble_seeds": [0, 1]'))
    assert curve.main(["--out", str(out), "--configs", "ens", "--png", str(tmp_path / "c.png")]) == 0
    assert "| ens | 30 | 1 | 0.700 | 0.700 | 30.0 |" in capsys.readouterr().out.splitlines()
