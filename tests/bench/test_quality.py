"""bench/quality.py: its command-line helpers (folds of the real set, seeds); nothing here runs the pipeline."""

from __future__ import annotations

import collections
import importlib
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def quality(monkeypatch):
    """bench/quality.py imported as its script runs it: with bench/ on sys.path (it imports quality_measures)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("quality")


def test_default_folds_test_every_real_patient_once(quality):
    folds = quality.parse_folds(quality.REAL_FOLDS)
    assert [fold.name for fold in folds] == ["fold1", "fold2"]
    tested = collections.Counter(case for fold in folds for case in fold.test)
    assert sorted(tested) == sorted(quality.REAL_CASES) and set(tested.values()) == {1}
    for fold in folds:
        assert not set(fold.test) & set(fold.train) and not set(fold.test) & set(fold.val)
        assert not set(fold.val) & set(fold.train) and fold.train  # validates on a patient it does not train on
        assert sorted(fold.test + fold.val + fold.train) == sorted(quality.REAL_CASES)


def test_without_a_validation_case_the_last_remaining_patient_validates(quality):
    first, second = quality.parse_folds("DUKE01+DUKE02;DUKE03+DUKE04+DUKE05")
    assert (first.test, first.val, first.train) == (("DUKE01", "DUKE02"), ("DUKE05",), ("DUKE03", "DUKE04"))
    assert (second.test, second.val, second.train) == (("DUKE03", "DUKE04", "DUKE05"), ("DUKE02",), ("DUKE01",))


def test_a_validation_case_can_be_given(quality):
    first, second = quality.parse_folds("DUKE01:DUKE03;DUKE02+DUKE04")
    assert (first.test, first.val, first.train) == (("DUKE01",), ("DUKE03",), ("DUKE02", "DUKE04", "DUKE05"))
    assert (second.test, second.val, second.train) == (("DUKE02", "DUKE04"), ("DUKE05",), ("DUKE01", "DUKE03"))


def test_a_fold_without_validation_trains_on_its_validation_patient(quality):
    fold = quality.parse_folds("DUKE03+DUKE04+DUKE05")[0].without_validation()
    assert (fold.name, fold.test, fold.val, fold.train) == ("fold1", ("DUKE03", "DUKE04", "DUKE05"), (),
                                                            ("DUKE01", "DUKE02"))


@pytest.mark.parametrize("spec, message", [
    ("DUKE01;DUKE06", "unknown case 'DUKE06'; the real set has DUKE01, DUKE02, DUKE03, DUKE04, DUKE05"),
    ("duke01", "unknown case 'duke01'"),
    ("DUKE01:DUKE07", "unknown case 'DUKE07'"),
    ("", "expected at least one fold, e.g. DUKE01+DUKE02;DUKE03+DUKE04+DUKE05"),
    (" ; ", "expected at least one fold"),
    ("DUKE01;:DUKE02", "fold 2 has no test case"),
    ("DUKE01+DUKE02;DUKE02+DUKE03", "DUKE02 tested in two folds"),
    ("DUKE01:DUKE01", "fold 1 validates on a test case"),
    ("DUKE01+DUKE01", "fold 1 names DUKE01 more than once"),
    ("DUKE01:DUKE02+DUKE02", "fold 1 names DUKE02 more than once"),
    ("DUKE01+DUKE02+DUKE03+DUKE04", "fold 1 leaves 1 patient(s) for training and validation"),
    ("DUKE01+DUKE02+DUKE03:DUKE04+DUKE05", "fold 1 leaves no patient to train on"),
])
def test_malformed_folds_are_usage_errors(quality, spec, message):
    with pytest.raises(quality.UsageError, match=f"^--folds {re.escape(repr(spec))}: .*{re.escape(message)}"):
        quality.parse_folds(spec)


@pytest.mark.parametrize("text, seeds", [("0", [0]), ("0,1", [0, 1]), (" 2 , 1 ", [2, 1]), ("1,0,1,0", [1, 0]),
                                         ("0,,1,", [0, 1])])
def test_seeds_keep_their_order_without_repeats(quality, text, seeds):
    assert quality.parse_seeds(text) == seeds


@pytest.mark.parametrize("text, message", [
    ("a", "expected comma-separated integers, e.g. 0,1"),
    ("0.5", "expected comma-separated integers"),
    ("0;1", "expected comma-separated integers"),
    ("", "expected at least one seed"),
    (" , ", "expected at least one seed"),
])
def test_bad_seeds_are_usage_errors(quality, text, message):
    with pytest.raises(quality.UsageError, match=f"^--seeds {re.escape(repr(text))}: {re.escape(message)}"):
        quality.parse_seeds(text)


def _plan(quality, tmp_path, epochs, budget_minutes=0.0, smoke=False):
    return quality.Plan(tmp_path, smoke, epochs, budget_minutes, "CPU test, 2 cores, bf16", extra_train=[],
                        real_folds=quality.parse_folds(quality.REAL_FOLDS), real_data=None)


def test_a_run_at_another_budget_gets_its_own_result_file(quality, tmp_path):
    standard = _plan(quality, tmp_path, quality.DEFAULT_EPOCHS)
    longer = _plan(quality, tmp_path, 30)
    assert standard.result_path("real", "smp_unet", 1) == tmp_path / "results" / "real-smp_unet-seed1.json"
    assert longer.result_path("real", "smp_unet", 1) == tmp_path / "results" / "real-smp_unet-30ep-seed1.json"
    assert _plan(quality, tmp_path, 15, 7.5).run_name("default") == "default-7.5min"
    assert _plan(quality, tmp_path, 60, 20).run_name("default") == "default-60ep-20min"
    smoke = _plan(quality, tmp_path, quality.SMOKE_EPOCHS, quality.SMOKE_BUDGET_MINUTES, smoke=True)
    assert smoke.run_name("default") == "default"
    assert _plan(quality, tmp_path, quality.SMOKE_EPOCHS, 0.0, smoke=True).run_name("default") == "default-nocap"


def test_the_budget_reaches_train_py_as_epochs(quality, tmp_path):
    overrides = _plan(quality, tmp_path, 30).train_overrides("smp_unet", 1)
    assert overrides[-2:] == ["EPOCHS=30", "SEED=1"] and "BATCHES_PER_EPOCH=50" in overrides
    assert not any(item.startswith("TRAIN_BUDGET_MINUTES") for item in overrides)
    assert _plan(quality, tmp_path, 30, 20).train_overrides("smp_unet", 1)[-2:] == ["TRAIN_BUDGET_MINUTES=20",
                                                                                   "SEED=1"]


@pytest.mark.parametrize("argv, message", [(["--epochs", "0"], "--epochs 0: expected at least 1 epoch"),
                                           (["--set", "EPOCHS=3"], "give the training budget with --epochs")])
def test_budgets_given_otherwise_are_usage_errors(quality, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        quality.parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_an_ensemble_config_names_trained_seeds(quality):
    for name, config in quality.CONFIGS.items():
        if "ensemble_seeds" in config:
            assert len(config["ensemble_seeds"]) >= 2 and config["train_as"] in quality.CONFIGS, name
        if "ensemble_members" in config:  # trained configs, on the same folds and prepared data
            members = [quality.CONFIGS[member] for member, _, _ in config["ensemble_members"]]
            assert len(members) >= 2 and "ensemble_seeds" not in config, name
            assert all("train" in member for member in members), name
            shared = {(bool(member.get("no_validation")), tuple(member.get("prepare", ()))) for member in members}
            assert len(shared) == 1, name


def test_an_ensemble_of_configs_trains_each_member_at_its_own_budget(quality, tmp_path):
    plan = _plan(quality, tmp_path, quality.DEFAULT_EPOCHS)
    assert plan.members("improved_mix_ds_tta", 0) == [("improved_strips_wide", 0, 15),
                                                      ("improved_strips_wide_ds", 2, 30)]
    assert plan.train_overrides("improved_strips_wide_ds", 2, 30)[-2:] == ["EPOCHS=30", "SEED=2"]
    assert quality.trained_as("improved_mix_ds_tta") == "improved_strips_wide"
    assert plan.folds_of("improved_mix_ds_tta") == plan.folds_of("improved_strips_wide")
    identity = plan.identity("real", "improved_mix_ds_tta", 0)
    assert [member[:3] for member in identity["ensemble_members"]] == [["improved_strips_wide", 0, 15],
                                                                       ["improved_strips_wide_ds", 2, 30]]
    assert identity["ensemble_members"][1][3] == plan.train_overrides("improved_strips_wide_ds", 2, 30)
    # ensembles of seeds and single configs as before
    assert plan.members("improved_strips_wide_ens2_tta", 0) == [("improved_strips_wide", 0, 15),
                                                                 ("improved_strips_wide", 1, 15)]
    assert _plan(quality, tmp_path, 30).members("improved_strips_wide_tta", 2) == [("improved_strips_wide", 2, 30)]
    assert "ensemble_members" not in plan.identity("real", "improved_strips_wide_tta", 0)


def test_an_ensemble_of_configs_at_fixed_budgets_does_not_follow_epochs_and_shrinks_under_smoke(quality, tmp_path):
    standard, longer = _plan(quality, tmp_path, quality.DEFAULT_EPOCHS), _plan(quality, tmp_path, 30)
    assert longer.members("improved_mix_ds_tta", 0) == standard.members("improved_mix_ds_tta", 0)
    assert longer.run_name("improved_mix_ds_tta") == "improved_mix_ds_tta"
    assert longer.identity("real", "improved_mix_ds_tta", 0) == standard.identity("real", "improved_mix_ds_tta", 0)
    assert longer.run_name("improved_strips_wide_tta") == "improved_strips_wide_tta-30ep"  # a plain config does
    smoke = _plan(quality, tmp_path, quality.SMOKE_EPOCHS, quality.SMOKE_BUDGET_MINUTES, smoke=True)
    assert [epochs for _, _, epochs in smoke.members("improved_mix_ds_tta", 0)] == [quality.SMOKE_EPOCHS] * 2
    assert smoke.run_name("improved_mix_ds_tta") == "improved_mix_ds_tta"


def _result(config, seed, epochs, dice, minutes=15.0):
    fold = {"dice_pooled": dice, "cases_by_split": {"test": ["DUKE01"], "val": ["DUKE02"], "train": ["DUKE03"]},
            "train": {"epochs_done": epochs}, "evaluate_summary": []}
    pooled = {"dice_pooled": dice, "dice_pooled_cols": dice, "dice_per_patient_mean": dice,
              "abs_volume_diff_mean_mm3": 0.1, "area_ratio": 1.0, "train_minutes_per_fold_mean": minutes}
    return {"dataset": "real", "config": config, "seed": seed, "smoke": False, "epochs": epochs,
            "budget_minutes": 0.0, "machine": "CPU test, 2 cores, bf16", "folds": {"fold1": fold}, "pooled": pooled}


def test_tables_keep_runs_at_other_budgets_apart(quality):
    text = quality.tables([_result("smp_unet", 0, 30, 0.7), _result("smp_unet", 0, 15, 0.5),
                           _result("smp_unet", 1, 15, 0.6)])
    per_run, means = text.split("mean (max - min) over seeds:")
    rows = [line.split(" | ")[:4] for line in per_run.splitlines() if line.startswith("| smp_unet")]
    assert rows == [["| smp_unet", "0", "0.500", "0.500"], ["| smp_unet", "1", "0.600", "0.600"],
                    ["| smp_unet-30ep", "0", "0.700", "0.700"]]
    rows = [line.split(" | ")[:3] for line in means.splitlines() if line.startswith("| smp_unet")]
    assert rows == [["| smp_unet", "2", "0.550 (0.100)"], ["| smp_unet-30ep", "1", "0.700 (0.000)"]]
    assert "training budget per fold: 15 epochs, 30 epochs (of each config's BATCHES_PER_EPOCH" in per_run
    assert "trained on: CPU test, 2 cores, bf16" in per_run


def test_only_fold_runs_one_fold_under_its_own_name(quality, tmp_path):
    args = quality.parse_args(["--dataset", "real", "--only-fold", "2"])
    assert [fold.name for fold in args.fold_list] == ["fold2"] and args.fold_list[0].test[0] == "DUKE03"
    plan = quality.Plan(tmp_path, False, 15, 0.0, "CPU", extra_train=[], real_folds=args.fold_list, real_data=None,
                        only_fold=True)
    assert plan.result_path("real", "improved_strips_wide", 0).name == "real-improved_strips_wide-seed0-fold2.json"
    with pytest.raises(SystemExit):
        quality.parse_args(["--only-fold", "3"])


def _fold(dice, cases):
    return {"dice_pooled": dice, "cases_by_split": {"test": list(cases), "val": [], "train": []},
            "train": {"epochs_done": 15, "wall_seconds": 600.0}, "evaluate_summary": [],
            "cases": {case: {"n_bscans": 11, "tp": tp, "pred": pred, "ref": ref, "cols_tp": tp, "cols_pred": pred,
                             "cols_ref": ref, "dice": 2 * tp / (pred + ref), "pred_area_mm2": 1.0,
                             "ref_area_mm2": 1.0, "abs_volume_diff_mm3": 0.0}
                      for case, (tp, pred, ref) in cases.items()}}


def test_results_made_fold_by_fold_are_joined_and_pooled(quality):
    one = {**_result("improved", 0, 15, 0.5), "folds": {"fold1": _fold(0.5, {"DUKE01": (1, 2, 2)})}}
    two = {**_result("improved", 0, 15, 0.8), "folds": {"fold2": _fold(0.8, {"DUKE03": (4, 5, 5)})}}
    (joined,) = quality.join_fold_results([one, two])
    assert sorted(joined["folds"]) == ["fold1", "fold2"]
    assert joined["pooled"]["dice_pooled"] == pytest.approx(2 * 5 / (7 + 7))
    assert joined["pooled"]["train_minutes_per_fold_mean"] == pytest.approx(10.0)
    assert len(quality.join_fold_results([one, one])) == 2  # the same fold twice: not joined


@pytest.mark.parametrize("name", ["gpu_check.sh", "gpu_levers.sh"])
def test_gpu_scripts_say_in_one_line_that_there_is_no_gpu(tmp_path, name):
    import subprocess
    import sys
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is here: the check would run for minutes")
    done = subprocess.run(["bash", str(BENCH / name), str(tmp_path / "out")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable}, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines() == [f"bench/{name}: no CUDA GPU on this machine (torch sees none); nothing run"]
    assert not (tmp_path / "out").exists()


def test_tables_give_each_patients_dice(quality):
    one = {**_result("improved", 0, 15, 0.5), "folds": {"fold1": _fold(0.5, {"DUKE01": (1, 2, 2)})}}
    two = {**_result("improved", 0, 15, 0.8), "folds": {"fold2": _fold(0.8, {"DUKE03": (4, 5, 5)})}}
    text = quality.tables(quality.join_fold_results([one, two]))
    per_patient = text.split("Dice per patient (case):")[1]
    assert "| config | seed | DUKE01 | DUKE03 |" in per_patient and "| improved | 0 | 0.500 | 0.800 |" in per_patient


def test_a_pretrained_config_starts_each_fold_from_its_synthetic_run(quality, tmp_path, monkeypatch):
    """``pretrain``: the config trained once per seed on the whole synthetic set, its best.pt each fold's
    --init-from; the pretraining's epochs are part of the result's identity."""
    plan = _plan(quality, tmp_path, quality.DEFAULT_EPOCHS)
    steps = []

    def fake_step(step, command, log):
        steps.append((step, command))
        if step == "train.py":  # a finished run
            run_dir = Path(command[command.index("--run-dir") + 1])
            run_dir.mkdir(parents=True)
            (run_dir / "best.pt").write_bytes(b"")
        return 1.0

    monkeypatch.setattr(quality, "run_step", fake_step)
    monkeypatch.setattr(quality, "make_synthetic", lambda out, small: tmp_path / "synthetic-data")
    first = quality.pretrained_checkpoint(plan, "improved_strips_wide_synpre", 1)
    again = quality.pretrained_checkpoint(plan, "improved_strips_wide_synpre", 1)
    assert first == again and first.name == "best.pt" and "seed1" in str(first)
    assert [step for step, _ in steps] == ["prepare_data.py", "train.py"]  # prepared and trained once, then reused
    prepare, train = steps[0][1], steps[1][1]
    assert quality.PRETRAIN_SPLIT in prepare and str(tmp_path / "synthetic-data") in prepare
    assert train[-2:] == ["--set", "SEED=1"] and "EPOCHS=10" in train
    assert plan.identity("real", "improved_strips_wide_synpre", 1)["pretrain_epochs"] == {
        "improved_strips_wide_synpre": 10}
    assert "pretrain_epochs" not in plan.identity("real", "improved_strips_wide", 1)


def faked_training(quality, tmp_path, monkeypatch) -> list:
    """``quality.run_step`` replaced by a training that writes ``tmp_path/run/best.pt`` at once; returns the list
    of the commands it is given."""
    trained = []

    def fake_step(step, command, log):
        trained.append(command)
        (tmp_path / "run").mkdir(exist_ok=True)
        (tmp_path / "run" / "best.pt").write_bytes(b"")
        return 1.0

    monkeypatch.setattr(quality, "run_step", fake_step)
    return trained


def test_a_run_started_from_other_weights_is_trained_again(quality, tmp_path, monkeypatch):
    """A finished fold is reused only when the weights it started from are the same bytes: a pretraining redone
    in place (same path, other weights) retrains the folds that started from it."""
    trained = faked_training(quality, tmp_path, monkeypatch)
    command = ["python", "train.py", "--init-from", "pre/best.pt"]
    for starts_from in ("aaa", "aaa", "bbb", ""):
        quality.train_fold(command, tmp_path, tmp_path / "run", "[test]", starts_from)
    assert len(trained) == 3  # the second call reused the first's run
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"one")
    first = quality.file_digest(weights)
    weights.write_bytes(b"two")
    assert quality.file_digest(weights) != first and len(first) == 64


def test_a_run_trained_from_another_checkout_is_reused(quality, tmp_path, monkeypatch):
    """The same training run by another clone of the repository (another path to train.py, another Python) is the
    same run: it is reused, not deleted and trained again; other arguments still retrain."""
    trained = faked_training(quality, tmp_path, monkeypatch)
    arguments = ["--work-dir", "w", "--set", "SEED=0"]
    quality.train_fold(["/a/.venv/bin/python", "/a/train.py", *arguments], tmp_path, tmp_path / "run", "[test]")
    reused = quality.train_fold(["/b/.venv/bin/python", "/b/train.py", *arguments], tmp_path, tmp_path / "run",
                                "[test]")
    assert len(trained) == 1 and reused["reused"]
    quality.train_fold(["/b/.venv/bin/python", "/b/train.py", *arguments[:-1], "SEED=1"], tmp_path,
                       tmp_path / "run", "[test]")
    assert len(trained) == 2


def test_pretrained_configs_are_refused_on_the_synthetic_set(quality, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quality.parse_args(["--dataset", "synthetic", "--configs", "improved_strips_wide_synpre"])
    assert exit_info.value.code == 2 and "cannot be scored on it" in capsys.readouterr().err
    assert quality.parse_args(["--dataset", "real", "--configs", "improved_strips_wide_synpre"]).config_names == [
        "improved_strips_wide_synpre"]


def test_a_snapshot_ensemble_predicts_with_its_runs_cycle_snapshots(quality, tmp_path):
    plan = _plan(quality, tmp_path, quality.DEFAULT_EPOCHS)
    assert "SNAPSHOT_CYCLES=3" in plan.train_overrides("improved_strips_wide_snap3", 0)
    assert quality.trained_as("improved_strips_wide_snap3_ens") == "improved_strips_wide_snap3"
    assert plan.identity("real", "improved_strips_wide_snap3_ens", 0)["snapshots"] == 3
    assert "snapshots" not in plan.identity("real", "improved_strips_wide_snap3", 0)


def test_the_readme_recipe_predicts_as_the_benchmark_config_measured_it(quality):
    """The README's recommended predict.py line segments as improved_strips_wide_ens2_tta_rot was measured: the
    preset's own settings (PREDICT_REGION=all) and the config's test-time settings."""
    readme = (BENCH.parent / "README.md").read_text(encoding="utf-8")
    line = next(text for text in readme.splitlines()
                if text.startswith("python predict.py --checkpoint WORK/runs/improved0/best.pt WORK/runs/improved1"))
    given = re.findall(r'--set "([^"]+)"|--set (\S+)', line)
    sets = {quoted or plain for quoted, plain in given}
    config = quality.CONFIGS["improved_strips_wide_ens2_tta_rot"]
    assert "--preset improved" in line and config["ensemble_seeds"] == (0, 1)
    assert sets | {"PREDICT_REGION=all"} == set(config["predict"])
