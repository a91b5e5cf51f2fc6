"""demo.py's wiring: which settings each stage gets (the stages themselves are tested on their own)."""

import config
import demo


def test_the_demo_trains_and_predicts_with_its_preset_and_budget_and_the_command_line_wins(tmp_path, monkeypatch):
    calls = {}

    def stage(name, status=0):
        def run(argv):
            calls[name] = argv
            return status
        return run

    for module, name in ((demo.prepare_data, "prepare"), (demo.train, "train"), (demo.predict, "predict"),
                         (demo.evaluate, "evaluate")):
        monkeypatch.setattr(module, "main", stage(name))
    monkeypatch.setattr(demo, "choose_data_root", lambda cfg: tmp_path / "data")
    monkeypatch.setattr(demo, "inputs_of_test_split", lambda work_dir, cfg: ["case/oct.mhd"])
    assert demo.main(["--set", f"WORK_DIR={tmp_path / 'work'}", "--set", "SEED=3"]) == 0

    train = calls["train"]
    assert train[train.index("--preset") + 1] == config.DEMO_PRESET == "improved_patches"
    items = [train[i + 1] for i, arg in enumerate(train) if arg == "--set"]
    assert items[:2] == [f"EPOCHS={config.DEMO_EPOCHS}", f"TRAIN_BUDGET_MINUTES={config.DEMO_TRAIN_MINUTES}"]
    assert items[2:] == [*config.DEMO_OVERRIDES, f"WORK_DIR={tmp_path / 'work'}", "SEED=3"]  # the user's last: win
    predict = calls["predict"]
    assert predict[predict.index("--preset") + 1] == "improved_patches" and predict[-1] == "case/oct.mhd"
    assert "--preset" not in calls["prepare"] and "--preset" not in calls["evaluate"]


def test_without_a_preset_the_demo_trains_config_pys_own_settings(tmp_path, monkeypatch):
    calls = {}
    for module in (demo.prepare_data, demo.train, demo.predict, demo.evaluate):
        monkeypatch.setattr(module, "main", lambda argv, module=module: calls.setdefault(module.__name__, argv) and 0)
    monkeypatch.setattr(demo, "choose_data_root", lambda cfg: tmp_path / "data")
    monkeypatch.setattr(demo, "inputs_of_test_split", lambda work_dir, cfg: ["case/oct.mhd"])
    overrides = "DEMO_OVERRIDES=" + repr(config.AUTHORS_DEMO_OVERRIDES)
    assert demo.main(["--set", f"WORK_DIR={tmp_path / 'work'}", "--set", "DEMO_PRESET=", "--set", overrides]) == 0
    assert "--preset" not in calls["train"] and "--preset" not in calls["predict"]
    assert "BN_REESTIMATE_BATCHES=20" in calls["train"]
    epochs = [item for item in calls["train"] if item.startswith("EPOCHS=")]
    assert epochs == [f"EPOCHS={config.DEMO_EPOCHS}", "EPOCHS=1"]  # the authors' demo keeps its one epoch of 40
