"""The main job on the small synthetic set: prepare -> a few training steps -> reload -> predict -> evaluate."""

import numpy as np
import pandas as pd

import evaluate
import predict
import train
from utils.io.mhd_io import read_volume


def test_synthetic_to_evaluation(prepared_work, tmp_path, capsys):
    data_root = prepared_work.parent / "data"
    run_dir = tmp_path / "run"
    assert train.main(["--work-dir", str(prepared_work), "--run-dir", str(run_dir), "--set", "EPOCHS=1",
                       "--set", "BATCHES_PER_EPOCH=2", "--set", "BATCH_SIZE=4", "--set", "PATCH_SHAPE=(128, 64)",
                       "--set", "PATCH_BORDER=8", "--set", "VAL_BSCANS=4", "--set", "LOADER_WORKERS=0"]) == 0

    split = pd.read_csv(prepared_work / "split.csv", dtype={"case": str})
    index = pd.read_csv(prepared_work / "slice_index.csv", dtype={"case": str})
    test_cases = sorted(split.loc[split["split"] == "test", "case"])
    assert test_cases
    inputs = sorted(index.loc[index["case"].isin(test_cases), "oct_path"].unique())
    predictions = tmp_path / "predictions"
    assert predict.main(["--checkpoint", str(run_dir / "best.pt"), "--out", str(predictions), *inputs]) == 0

    volumes = pd.read_csv(predictions / "volumes.csv", dtype={"case": str})
    assert sorted(volumes["case"]) == test_cases
    for oct_path in inputs:
        case = oct_path.split("/")[-2]
        labels, geometry = read_volume(predictions / case / "segmentation.mhd")
        volume, oct_geometry = read_volume(oct_path)
        assert labels.shape == volume.shape and labels.dtype == np.uint8
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert geometry == oct_geometry
        row = volumes.set_index("case").loc[case]
        for fluid, code in (("IRF", 1), ("SRF", 2), ("PED", 3)):
            expected_mm3 = (labels == code).sum() * geometry.voxel_volume_mm3
            assert abs(row[f"{fluid}_volume_mm3"] - expected_mm3) <= 1e-6 + 1e-6 * expected_mm3
        assert 0.0 <= row["PED_presence"] <= 1.0

    status = evaluate.main(["--pred", str(predictions), "--data-root", str(data_root), "--split-file",
                            str(prepared_work / "split.csv"), "--split", "test", "--out", str(tmp_path / "eval")])
    assert status == 0
    per_case = pd.read_csv(tmp_path / "eval" / "per_case.csv", dtype={"case": str})
    assert sorted(per_case["case"].unique()) == test_cases
    assert set(per_case["fluid"]) == {"IRF", "SRF", "PED"}
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert "all" in set(summary["vendor"])
    assert "dice_mean_with_fluid" in capsys.readouterr().out
