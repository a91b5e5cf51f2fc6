"""bench/cross_vendor.py: its folds by vendor, the vendor data roots and the table; nothing here trains."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def cross_vendor(monkeypatch):
    """bench/cross_vendor.py imported as its script runs it: with bench/ on sys.path."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("cross_vendor")


def _synthetic_octs(root: Path, per_vendor: int = 6) -> dict[str, Path]:
    """Case name -> oct.mhd in the synthetic set's layout (``RETOUCH-TrainingSet-<Vendor>/<case>/oct.mhd``)."""
    octs = {}
    for vendor in ("Cirrus", "Spectralis", "Topcon"):
        for index in range(per_vendor):
            case = f"TRAIN_{vendor[:3].upper()}{index:02d}"
            folder = root / f"RETOUCH-TrainingSet-{vendor}" / case
            folder.mkdir(parents=True)
            (folder / "oct.mhd").write_text("header", encoding="utf-8")
            (folder / "oct.raw").write_bytes(b"\0" * 8)
            octs[case] = folder / "oct.mhd"
    return octs


def test_vendor_is_read_from_the_case_folders_parent(cross_vendor, tmp_path):
    octs = _synthetic_octs(tmp_path)
    assert {cross_vendor.vendor_of(path) for path in octs.values()} == set(cross_vendor.VENDORS)


def test_vendor_fold_trains_validates_and_tests_on_that_vendor_alone(cross_vendor, tmp_path):
    octs = _synthetic_octs(tmp_path)
    fold = cross_vendor.vendor_fold(octs, "Topcon", without_validation=False)
    assert fold.train == ("TRAIN_TOP00", "TRAIN_TOP01", "TRAIN_TOP02")
    assert fold.val == ("TRAIN_TOP03",) and fold.test == ("TRAIN_TOP04", "TRAIN_TOP05")
    merged = cross_vendor.vendor_fold(octs, "Topcon", without_validation=True)
    assert not merged.val and set(merged.train) == {"TRAIN_TOP00", "TRAIN_TOP01", "TRAIN_TOP02", "TRAIN_TOP03"}
    assert merged.test == fold.test


def test_a_vendor_with_nothing_left_to_test_is_a_failed_step(cross_vendor, tmp_path):
    octs = _synthetic_octs(tmp_path, per_vendor=4)
    with pytest.raises(cross_vendor.StepFailed, match="Cirrus: 4 case"):
        cross_vendor.vendor_fold(octs, "Cirrus", without_validation=False)


def test_vendor_data_root_holds_that_vendors_cases_only_and_leaves_the_source_alone(cross_vendor, tmp_path):
    octs = _synthetic_octs(tmp_path / "all", per_vendor=2)
    before = sorted(str(path.relative_to(tmp_path / "all")) for path in (tmp_path / "all").rglob("*"))
    root = cross_vendor.vendor_data_root(octs, "Spectralis", tmp_path / "spectralis")
    found = sorted(path.parent.name for path in root.rglob("oct.mhd"))
    assert found == ["TRAIN_SPE00", "TRAIN_SPE01"]
    assert not list(root.rglob("*.partial"))
    assert cross_vendor.vendor_data_root(octs, "Spectralis", root) == root  # a rerun keeps what is there
    assert sorted(str(path.relative_to(tmp_path / "all")) for path in (tmp_path / "all").rglob("*")) == before


def test_table_has_a_row_per_training_vendor_and_a_column_per_test_vendor(cross_vendor):
    def run(dice):
        return {"train": {"epochs_done": 8, "wall_seconds": 120.0},
                "by_test_vendor": {vendor: {"dice_pooled": value, "area_ratio": 1.0}
                                   for vendor, value in zip(cross_vendor.VENDORS, dice)}}
    result = {"config": "c", "epochs": 8, "seed": 0, "machine": "CPU X",
              "by_train_vendor": {"Cirrus": run([0.9, 0.5, 0.4]), "Spectralis": run([0.3, 0.8, 0.2]),
                                  "Topcon": run([0.1, 0.2, 0.7])}}
    text = cross_vendor.table([result])
    assert text.startswith("c, 8 epochs; CPU X")
    rows = [line for line in text.splitlines() if line.startswith("| Cirrus") or line.startswith("| Spectralis")
            or line.startswith("| Topcon")]
    assert len(rows) == 3
    assert rows[1].split(" | ")[4:7] == ["0.300", "0.800", "0.200"]
    assert "2.0" in rows[0]  # 120 s of training, in minutes


@pytest.mark.parametrize("config", ["smp_unet_roi", "improved_strips_wide_ens2_tta", "improved_mix_ds_tta", "nope"])
def test_a_config_without_training_of_its_own_is_a_usage_error(cross_vendor, capsys, config):
    with pytest.raises(SystemExit) as exit_info:
        cross_vendor.parse_args(["--config", config])
    assert exit_info.value.code == 2 and f"--config {config}: expected a trained config" in capsys.readouterr().err
