"""The main job on the small synthetic set: prepare -> a few training steps -> reload -> predict -> evaluate,
checking the files each stage writes, their shapes and geometry, and that the reported Dice is the Dice of the
predicted and reference label volumes on disk."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import config
import evaluate
import predict
import train
from utils.evaluate.volume_metrics import PER_CASE_COLUMNS, SUMMARY_COLUMNS
from utils.io.mhd_io import read_volume
from utils.io.tables import read_slice_index, read_split_cases

FLUIDS = config.FLUIDS
TRAIN_SETTINGS = ["EPOCHS=1", "BATCHES_PER_EPOCH=2", "BATCH_SIZE=4", "PATCH_SHAPE=(128, 96)", "PATCH_BORDER=8",
                  "VAL_BSCANS=4", "LOADER_WORKERS=0"]


def dice(prediction, reference, code):
    """Dice of one fluid computed here from two label volumes; NaN when neither holds it."""
    predicted, expected = prediction == code, reference == code
    total = int(predicted.sum() + expected.sum())
    return math.nan if total == 0 else 2 * int((predicted & expected).sum()) / total


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_synthetic_to_evaluation(prepared_work, tmp_path):
    run_dir = tmp_path / "run"
    settings = [arg for item in TRAIN_SETTINGS for arg in ("--set", item)]
    assert train.main(["--work-dir", str(prepared_work), "--run-dir", str(run_dir), *settings]) == 0
    for name in (config.BEST_CHECKPOINT, config.LAST_CHECKPOINT, config.CONFIG_JSON):
        assert (run_dir / name).is_file(), name

    # predict.py on the test cases of the split prepare_data.py wrote
    test_cases = read_split_cases(prepared_work / config.SPLIT_CSV, "test")
    index = read_slice_index(prepared_work / config.SLICE_INDEX_CSV, FLUIDS)
    oct_paths = {case: Path(path) for case, path in
                 index.loc[index["case"].isin(test_cases), ["case", "oct_path"]].drop_duplicates().values}
    assert sorted(oct_paths) == test_cases
    predictions = tmp_path / "predictions"
    assert predict.main(["--checkpoint", str(run_dir / config.BEST_CHECKPOINT), "--out", str(predictions),
                         *map(str, oct_paths.values())]) == 0

    assert sorted(path.parent.name for path in predictions.glob(f"*/{config.SEGMENTATION_FILE}")) == test_cases
    volumes = pd.read_csv(predictions / config.VOLUMES_CSV, dtype={"case": str}).set_index("case")
    assert sorted(volumes.index) == test_cases
    predicted, references = {}, {}
    for case, oct_path in oct_paths.items():
        labels, geometry = read_volume(predictions / case / config.SEGMENTATION_FILE)
        oct_volume, oct_geometry = read_volume(oct_path)
        assert labels.shape == oct_volume.shape and labels.dtype == np.uint8
        assert geometry == oct_geometry  # spacing, origin and direction of the input
        assert set(np.unique(labels).tolist()) <= {config.BACKGROUND, *FLUIDS.values()}
        for fluid, code in FLUIDS.items():
            expected_mm3 = int((labels == code).sum()) * geometry.voxel_volume_mm3
            assert volumes.loc[case, f"{fluid}_volume_mm3"] == pytest.approx(expected_mm3, rel=1e-6, abs=1e-9)
            assert 0.0 <= volumes.loc[case, f"{fluid}_presence"] <= 1.0
        predicted[case] = labels
        references[case], reference_geometry = read_volume(oct_path.parent / "reference.mhd")
        assert reference_geometry == oct_geometry

    # evaluate.py on those predictions
    out = tmp_path / "eval"
    assert evaluate.main(["--pred", str(predictions), "--data-root", str(prepared_work.parent / "data"),
                          "--split-file", str(prepared_work / config.SPLIT_CSV), "--split", "test",
                          "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == sorted([config.CONFIG_JSON, "per_case.csv", "summary.csv"])
    per_case = pd.read_csv(out / "per_case.csv", dtype={"case": str})
    assert list(per_case.columns) == list(PER_CASE_COLUMNS)
    assert len(per_case) == len(test_cases) * len(FLUIDS)
    assert sorted(per_case["case"].unique()) == test_cases
    assert per_case["reference_present"].any()  # the test cases hold fluid: not every Dice is NaN
    for row in per_case.itertuples(index=False):
        prediction, reference = predicted[row.case], references[row.case]
        code = FLUIDS[row.fluid]
        assert same(row.dice, dice(prediction, reference, code)), (row.case, row.fluid)
        voxel_mm3 = read_volume(oct_paths[row.case])[1].voxel_volume_mm3
        assert row.reference_volume_mm3 == pytest.approx(int((reference == code).sum()) * voxel_mm3, abs=1e-12)
        assert row.predicted_volume_mm3 == pytest.approx(int((prediction == code).sum()) * voxel_mm3, abs=1e-12)
        assert row.presence_score == volumes.loc[row.case, f"{row.fluid}_presence"]  # from volumes.csv

    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert len(summary) == (per_case["vendor"].nunique() + 1) * len(FLUIDS)  # each vendor, then all
    everything = summary[summary["vendor"] == "all"].set_index("fluid")
    for fluid in FLUIDS:
        scores = per_case.loc[per_case["fluid"] == fluid, "dice"]
        assert everything.loc[fluid, "n_cases"] == len(test_cases)
        assert same(everything.loc[fluid, "dice_mean_with_fluid"], scores.mean() if scores.notna().any() else math.nan)
