"""train.py on the small synthetic set: loss goes down, checkpoints reload, --resume continues, DDP on CPU."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

import config
import train
from session_cache import built_once
from utils.train import session
from utils.configuration import ConfigError
from utils.model.checkpoints import load_checkpoint, model_from_checkpoint

REPO = Path(__file__).resolve().parents[1]
# small patches and batches; shuffle buffers of 8 B-scans and 32 patches, not the original's 100 and 1000, which read
# and cut up the whole tiny training set before the first batch of every epoch (about a second each)
QUICK = ["--set", "PATCH_SHAPE=(128, 96)", "--set", "PATCH_BORDER=8", "--set", "BATCH_SIZE=4",
         "--set", "VAL_BSCANS=2", "--set", "LEARNING_RATE=1e-3", "--set", "LOADER_WORKERS=0",
         "--set", "BSCAN_SHUFFLE_BUFFER=8", "--set", "PATCH_SHUFFLE_BUFFER=32"]


def _train(work, run_dir, *extra):
    return train.main(["--work-dir", str(work), "--run-dir", str(run_dir), *QUICK, *extra])


@pytest.fixture(scope="module")
def trained_run(prepared_work, tmp_path_factory):
    """A run of the authors' network, 3 epochs of 6 batches of 8 patches, trained once per session (the xdist
    workers share it: tests copy it before they change it)."""
    def build(run_dir):
        # the original's shuffle buffers (QUICK's small ones mix too few B-scans for the loss to fall in 18 steps)
        assert _train(prepared_work, run_dir, "--set", "EPOCHS=3", "--set", "BATCHES_PER_EPOCH=6",
                      "--set", "BATCH_SIZE=8", "--set", "VAL_BSCANS=4", "--set", "LOADER_WORKERS=1",
                      "--set", f"BSCAN_SHUFFLE_BUFFER={config.BSCAN_SHUFFLE_BUFFER}",
                      "--set", f"PATCH_SHUFFLE_BUFFER={config.PATCH_SHUFFLE_BUFFER}") == 0

    return built_once(tmp_path_factory, "trained_run", build)


def test_short_run_lowers_the_loss_and_writes_the_run_folder(trained_run):
    log = pd.read_csv(trained_run / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3]
    assert log["train_loss"].iloc[-1] < log["train_loss"].iloc[0]
    assert {"val_loss", "dice_IRF", "dice_SRF", "dice_PED", "dice_mean_fluid", "iou_mean_fluid"} <= set(log)
    for name in ("config.json", "train.log", "curves.png", "best.pt", "last.pt"):
        assert (trained_run / name).is_file(), name


@pytest.mark.parametrize("avx2, channels_last, layout", [(True, True, "NCHW"), (False, True, "NHWC"),
                                                          (False, False, "NCHW")])
def test_the_authors_network_trains_in_nchw_in_fp32_where_onednn_runs_avx2(prepared_work, tmp_path, monkeypatch,
                                                                             avx2, channels_last, layout):
    from utils.model import runtime
    monkeypatch.setattr(runtime, "onednn_runs_avx2", lambda: avx2)
    run_dir = tmp_path / "run"
    assert _train(prepared_work, run_dir, "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1",
                  "--set", "MIXED_PRECISION=False", "--set", f"CHANNELS_LAST={channels_last}") == 0
    assert f"(fp32, {layout}, 1 process(es))" in (run_dir / "train.log").read_text()


def test_a_cpu_whose_bf16_runs_slower_trains_in_fp32_and_the_log_says_why(prepared_work, tmp_path, monkeypatch):
    from utils.model import runtime
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(runtime, "bf16_speedup", lambda: 0.5)
    run_dir = tmp_path / "run"
    assert _train(prepared_work, run_dir, "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1",
                  "--set", "MODEL=smp_unet") == 0
    log = (run_dir / "train.log").read_text()
    assert "(fp32, NHWC, 1 process(es))" in log
    assert "note: fp32: this CPU has bf16 but ran a convolution 0.50x as fast in bf16 as in fp32" in log


def test_checkpoint_reloads_with_weights_only(trained_run, prepared_work):
    checkpoint = load_checkpoint(trained_run / "last.pt")  # torch.load(weights_only=True) inside
    assert checkpoint["epoch"] == 3
    assert checkpoint["config"]["PATCH_SHAPE"] == [128, 96]
    assert checkpoint["histogram_reference"]["path"].endswith("oct.mhd")
    assert len(checkpoint["histogram_reference"]["counts"]) == 256
    assert checkpoint["metrics"]["epoch"] == 3 and "dice_mean_fluid" in checkpoint["metrics"]
    model = model_from_checkpoint(checkpoint)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 128, 96))
    assert checkpoint["model_args"]["name"] == "rmit_unet"
    assert out.shape == (1, 4, 128 - 92, 96 - 92)  # the unpadded network's centre
    best = load_checkpoint(trained_run / "best.pt")
    assert 1 <= best["epoch"] <= 3


def test_resume_continues_from_the_saved_epoch(trained_run, prepared_work, tmp_path):
    run_dir = tmp_path / "resumed"
    shutil.copytree(trained_run, run_dir)
    before = load_checkpoint(run_dir / "last.pt")
    steps_before = max(int(s["step"]) for s in before["optimizer_state"]["state"].values())
    # in this process: a spawned loader worker (the run's LOADER_WORKERS=1) would import train.py's modules again
    assert train.main(["--work-dir", str(prepared_work), "--run-dir", str(run_dir), "--resume",
                       "--set", "EPOCHS=4", "--set", "LOADER_WORKERS=0"]) == 0
    log = pd.read_csv(run_dir / "log.csv")
    assert log["epoch"].tolist() == [1, 2, 3, 4]
    after = load_checkpoint(run_dir / "last.pt")
    assert after["epoch"] == 4
    steps_after = max(int(s["step"]) for s in after["optimizer_state"]["state"].values())
    assert steps_after == steps_before + 6  # Adam went on from its saved state: 6 more batches, not 6 fresh
    assert after["config"]["BATCHES_PER_EPOCH"] == 6  # the run's own settings were kept


def test_resume_refuses_a_change_to_the_trained_model_and_takes_the_others(trained_run, prepared_work, tmp_path,
                                                                           capsys):
    run_dir = tmp_path / "resumed"
    shutil.copytree(trained_run, run_dir)
    resume = ["--work-dir", str(prepared_work), "--run-dir", str(run_dir), "--resume"]
    assert train.main([*resume, "--set", "MODEL=smp_unet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: MODEL='smp_unet': the run was trained with MODEL='rmit_unet', "
                                               "a setting of its model, which --resume keeps")
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 3 and "resuming" not in (run_dir / "train.log").read_text()
    checkpoint = load_checkpoint(run_dir / "last.pt")
    refused = {"N_CLASSES=5": "N_CLASSES=5: the run was trained with N_CLASSES=4,",
               "PATCH_SHAPE=(256, 128)": "PATCH_SHAPE=(256, 128): the run was trained with PATCH_SHAPE=(128, 96),",
               "BN_MOMENTUM=0.5": "BN_MOMENTUM=0.5: the run was trained with BN_MOMENTUM=",
               "DEPTH_SCALE=spacing": "DEPTH_SCALE='spacing': the run was trained with DEPTH_SCALE='height_table',",
               "MEDIAN_SLICES=5": "MEDIAN_SLICES=5: the run was trained with MEDIAN_SLICES="}
    for change, message in refused.items():
        cfg, _, _ = session.resolve_run(train.parse_args([*resume, "--set", change]))
        with pytest.raises(ConfigError, match=re.escape(message)):
            session.check_training_settings(cfg, checkpoint)
    for change in ("EPOCHS=9", "TRAIN_BUDGET_MINUTES=5.0", "LOADER_WORKERS=2", "DEVICE=cpu", "LEARNING_RATE=1e-4",
                   "PATCH_SHAPE=(128, 96)"):  # not the model's, or its own value
        cfg, _, _ = session.resolve_run(train.parse_args([*resume, "--set", change]))
        session.check_training_settings(cfg, checkpoint)


def test_resume_without_a_run_is_an_error(prepared_work, tmp_path, capsys):
    assert train.main(["--work-dir", str(prepared_work), "--run-dir", str(tmp_path / "none"), "--resume"]) == 1
    assert "none/last.pt: no such checkpoint" in capsys.readouterr().err


def test_no_val_cases_keeps_the_last_as_best(prepared_work, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(prepared_work, work)
    val = pd.read_csv(work / "slices_val.csv")
    val.iloc[0:0].to_csv(work / "slices_val.csv", index=False)
    assert _train(work, tmp_path / "run", "--set", "EPOCHS=2", "--set", "BATCHES_PER_EPOCH=2") == 0
    assert capsys.readouterr().out.count("no val cases") == 1
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 2


def test_adversarial_training_runs(prepared_work, tmp_path):
    # the authors' discriminator needs about the original's output (164x36): the original's patch shape
    assert _train(prepared_work, tmp_path / "adv", "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=2",
                  "--set", "ADVERSARIAL=True", "--set", "PATCH_SHAPE=(256, 128)", "--set", "BATCH_SIZE=2") == 0
    checkpoint = load_checkpoint(tmp_path / "adv" / "last.pt")
    assert "discriminator_state" in checkpoint and "discriminator_optimizer_state" in checkpoint


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _torchrun_train(prepared_work, run_dir, tmp_path, *sets: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(_free_port()),
               str(REPO / "train.py"), "--work-dir", str(prepared_work), "--run-dir", str(run_dir), *QUICK,
               "--set", "DEVICE=cpu", *[arg for item in sets for arg in ("--set", item)]]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout
    return result


def test_two_process_ddp_on_cpu(prepared_work, tmp_path):
    # 4 validation B-scans in batches of 8 patches give the two ranks unequal numbers of validation batches here
    # (validating through the DDP wrapper, whose every forward is a collective, hung here)
    run_dir = tmp_path / "ddp"
    result = _torchrun_train(prepared_work, run_dir, tmp_path, "EPOCHS=2", "BATCHES_PER_EPOCH=2", "VAL_BSCANS=4",
                             "BATCH_SIZE=8")
    log = pd.read_csv(run_dir / "log.csv")
    assert log["epoch"].tolist() == [1, 2]  # one writer: rank 0
    assert log["val_loss"].notna().all()
    assert result.stdout.count("epoch 2: train loss") == 1
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2


def test_two_process_ddp_one_pass_epochs_with_a_budget_stay_in_step(prepared_work, tmp_path):
    """The original's one-pass epochs give the ranks unequal batch counts, and the time budget is checked every
    step: the ranks must still agree on every step (a mismatched collective would hang until the timeout)."""
    run_dir = tmp_path / "ddp"
    result = _torchrun_train(prepared_work, run_dir, tmp_path, "EPOCHS=3", "BATCHES_PER_EPOCH=0",
                             "TRAIN_BUDGET_MINUTES=0.02", "LR_SCHEDULE=poly")
    log = pd.read_csv(run_dir / "log.csv")
    assert log["epoch"].tolist()[0] == 1 and result.stdout.count("epoch 1: train loss") == 1
    assert "time budget of 0.02 min reached in epoch" in result.stdout + result.stderr


def test_init_from_starts_a_new_run_from_the_weights_and_refuses_another_network(trained_run, prepared_work,
                                                                                 tmp_path, capsys):
    source = trained_run / "best.pt"
    assert _train(prepared_work, tmp_path / "mismatch", "--init-from", str(source),
                  "--set", "PATCH_SHAPE=(256, 128)") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(source) in err[0] and "patch shape (128, 96) (this run: (256, 128))" in err[0]
    assert not (tmp_path / "mismatch").exists()
    assert _train(prepared_work, tmp_path / "other", "--init-from", str(source), "--set", "MODEL=smp_unet") == 2
    assert "network 'rmit_unet' (this run: 'smp_unet')" in capsys.readouterr().err
    assert _train(prepared_work, tmp_path / "both", "--init-from", str(source), "--resume") == 2

    # LEARNING_RATE tiny: after one step the weights are still (almost) the source's, far from a fresh start
    assert _train(prepared_work, tmp_path / "init", "--init-from", str(source), "--set", "EPOCHS=1",
                  "--set", "BATCHES_PER_EPOCH=1", "--set", "LEARNING_RATE=1e-12") == 0
    assert f"network weights from {source}" in (tmp_path / "init" / "train.log").read_text()
    started, original = load_checkpoint(tmp_path / "init" / "last.pt"), load_checkpoint(source)
    assert started["epoch"] == 1
    name = "conv1_0.weight"
    assert torch.allclose(started["model_state"][name], original["model_state"][name], atol=1e-6)


def test_truncated_slice_png_is_one_line_naming_it(prepared_work, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(prepared_work, work)
    for png in (work / "slices").glob("*/oct/*.png"):
        png.write_bytes(png.read_bytes()[:60])  # a copy cut short
    assert _train(work, tmp_path / "run", "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and ".png: cannot read this PNG" in err[0] and "rerun prepare_data.py" in err[0]


def test_run_dir_inside_the_data_or_prepared_slices_is_refused(prepared_work, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for run_dir in (data / "run", prepared_work / "slices" / "run"):
        assert train.main(["--work-dir", str(prepared_work), "--run-dir", str(run_dir), "--set",
                           f"DATA_ROOT={data}", *QUICK]) == 2
        assert "--run-dir lies inside the" in capsys.readouterr().err
        assert not run_dir.exists()


def test_time_budget_stops_within_a_long_epoch(prepared_work, tmp_path):
    # one pass over the split is an epoch (BATCHES_PER_EPOCH = 0): the 0.6 s budget ends the first one early
    assert _train(prepared_work, tmp_path / "budget", "--set", "EPOCHS=5", "--set", "BATCHES_PER_EPOCH=0",
                  "--set", "TRAIN_BUDGET_MINUTES=0.01") == 0
    log = pd.read_csv(tmp_path / "budget" / "log.csv")
    assert log["epoch"].tolist() == [1]
    assert "time budget of 0.01 min reached in epoch 1" in (tmp_path / "budget" / "train.log").read_text()
    assert load_checkpoint(tmp_path / "budget" / "best.pt")["epoch"] == 1


def test_blank_columns_left_out_of_the_loss_train_and_validate(prepared_work, tmp_path, monkeypatch):
    """With --set IGNORE_LABEL=200 the blank columns are marked 200, and the loss and the metrics leave 200 out (not
    config.py's 255)."""
    seen = []

    def recording_loader(records, work_dir, settings, *args):
        seen.append(("data", settings.ignore_label))
        return training_loader(records, work_dir, settings, *args)

    def recording_validate(model, batches, loss_fn, *args):
        seen.extend([("loss", loss_fn.ignore_label), ("metrics", args[-1])])
        return validate(model, batches, loss_fn, *args)

    training_loader, validate = session.training_loader, session.validate
    monkeypatch.setattr(session, "training_loader", recording_loader)
    monkeypatch.setattr(session, "validate", recording_validate)
    assert _train(prepared_work, tmp_path / "blank", "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=2",
                  "--set", "MODEL=smp_unet", "--set", "LOSS=ce_dice", "--set", "BLANK_COLUMNS_IGNORED=True",
                  "--set", "IGNORE_LABEL=200") == 0
    log = pd.read_csv(tmp_path / "blank" / "log.csv")
    assert log["train_loss"].notna().all() and log["val_loss"].notna().all()
    assert "; smp_unet (resnet18) on cpu" in (tmp_path / "blank" / "train.log").read_text()  # the network's label
    assert seen == [("data", 200), ("loss", 200), ("metrics", 200)]


def test_a_patch_shape_the_network_cannot_take_is_refused_in_one_line(prepared_work, tmp_path, capsys):
    assert _train(prepared_work, tmp_path / "odd", "--set", "PATCH_SHAPE=(100, 128)") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: PATCH_SHAPE=(100, 128): rmit_unet needs sides that are multiples of 8 and at least 96, "
                   "e.g. (256, 128)"]
    assert not (tmp_path / "odd" / "last.pt").exists()


def test_blank_columns_with_the_authors_loss_are_refused_in_one_line(prepared_work, tmp_path, capsys):
    assert _train(prepared_work, tmp_path / "blank", "--set", "BLANK_COLUMNS_IGNORED=True") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "BLANK_COLUMNS_IGNORED=True needs LOSS 'balanced_ce_dice' or 'ce_dice' or 'ce_lovasz'" in err[0]
    assert not (tmp_path / "blank" / "last.pt").exists()


def test_batch_norm_reestimation_leaves_training_as_it_was(prepared_work, tmp_path):
    """BN_REESTIMATE_BATCHES changes the running statistics only: the training losses are those of a plain run."""
    common = ["--set", "EPOCHS=2", "--set", "BATCHES_PER_EPOCH=2", "--set", "MODEL=smp_unet"]
    assert _train(prepared_work, tmp_path / "plain", *common) == 0
    assert _train(prepared_work, tmp_path / "bn", *common, "--set", "BN_REESTIMATE_BATCHES=3") == 0
    plain, bn = (pd.read_csv(tmp_path / name / "log.csv") for name in ("plain", "bn"))
    assert plain["train_loss"].tolist() == pytest.approx(bn["train_loss"].tolist(), rel=1e-6)
    plain_state, bn_state = (load_checkpoint(tmp_path / name / "last.pt")["model_state"] for name in ("plain", "bn"))
    means = [name for name in plain_state if name.endswith("running_mean")]
    assert means and any(not torch.equal(plain_state[name], bn_state[name]) for name in means)
    weights = [name for name in plain_state if name.endswith(".weight")]
    assert all(torch.equal(plain_state[name], bn_state[name]) for name in weights)


def test_moving_average_is_validated_saved_and_resumed(prepared_work, tmp_path):
    run = tmp_path / "ema"
    common = ["--set", "MODEL=smp_unet", "--set", "EMA_DECAY=0.9", "--set", "BATCHES_PER_EPOCH=2"]
    assert _train(prepared_work, run, *common, "--set", "EPOCHS=1") == 0
    saved = load_checkpoint(run / "last.pt")
    averaged, trained = saved["model_state"], saved["trained_model_state"]
    weights = [name for name in trained if name.endswith(".weight")]
    assert any(not torch.equal(averaged[name], trained[name]) for name in weights)
    model_from_checkpoint(saved)  # predict.py builds the averaged network
    assert train.main(["--work-dir", str(prepared_work), "--run-dir", str(run), "--resume", *QUICK, *common,
                       "--set", "EPOCHS=2"]) == 0
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_sgd_with_nesterov_trains_and_an_unknown_optimizer_is_one_line(prepared_work, tmp_path, capsys):
    assert _train(prepared_work, tmp_path / "sgd", "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=2",
                  "--set", "MODEL=smp_unet", "--set", "OPTIMIZER=sgd", "--set", "LEARNING_RATE=1e-2") == 0
    state = load_checkpoint(tmp_path / "sgd" / "last.pt")["optimizer_state"]
    assert state["param_groups"][0]["nesterov"] and state["param_groups"][0]["momentum"] == 0.99
    assert _train(prepared_work, tmp_path / "bad", "--set", "OPTIMIZER=lion") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: OPTIMIZER='lion': expected one of adam, sgd"


def test_the_original_adversarial_step_trains_the_discriminator_first_on_one_batch(prepared_work, tmp_path):
    """ADVERSARIAL_STEP = "discriminator_first": the discriminator sees one concatenated batch (2 x BATCH_SIZE
    pairs, the first half labelled real) and steps before the segmenter; the L2 term enters its objective."""
    from utils.model.networks import RmitCritic
    seen = []
    original = RmitCritic.forward

    def recording(self, image, segmentation):
        seen.append(len(image))
        return original(self, image, segmentation)

    RmitCritic.forward = recording
    try:
        assert _train(prepared_work, tmp_path / "adv", "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1",
                      "--set", "ADVERSARIAL=True", "--set", "PATCH_SHAPE=(256, 128)", "--set", "BATCH_SIZE=2",
                      "--set", "STRATIFY_BY=none") == 0
    finally:
        RmitCritic.forward = original
    assert seen == [4, 2]  # the concatenated real + fake batch, then the segmenter's fake batch


def test_stratify_none_draws_each_bscan_once_shuffled():
    import random as random_module
    from utils.train.data_pipeline import SliceRecord, epoch_records
    records = [SliceRecord("c", "r", z, 10, z % 2, 0.0039, "Spectralis") for z in range(10)]
    drawn = epoch_records(records, "none", random_module.Random(0))
    assert sorted(drawn) == sorted(records) and drawn != records


def test_a_diverged_run_stops_in_one_line_without_saving_nan_weights(prepared_work, tmp_path, capsys):
    run_dir = tmp_path / "diverged"
    assert _train(prepared_work, run_dir, "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=2",
                  "--set", "LEARNING_RATE=1e30", "--set", "MIXED_PRECISION=False") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "training diverged in epoch 1" in err[0] and str(run_dir) in err[0]
    assert not list(run_dir.glob("*.pt"))


def test_a_checkpoint_that_cannot_be_written_is_one_line(prepared_work, tmp_path, capsys, monkeypatch):
    def full_disk(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 123 vs 456")
    monkeypatch.setattr(torch, "save", full_disk)
    run_dir = tmp_path / "full"
    assert _train(prepared_work, run_dir, "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "cannot write the checkpoint" in err[0] and "is the disk full" in err[0]
    assert not list(run_dir.glob("*.pt")) and not list(run_dir.glob("*.tmp*"))


@pytest.mark.skipif(sys.platform == "win32", reason="no fcntl locks")
def test_a_second_run_on_a_run_folder_in_use_is_refused_naming_the_first(prepared_work, tmp_path, capsys):
    run_dir = tmp_path / "shared"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time\nfrom utils.io.run_lock import run_lock\n"
                               "with run_lock(sys.argv[1], 'train.py', '--run-dir'):\n"
                               "    print('held', flush=True)\n    time.sleep(600)\n",
                               str(run_dir / session.RUN_LOCK)],
                              cwd=REPO, text=True, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _train(prepared_work, run_dir, "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--run-dir {run_dir} is in use by another run (train.py, pid {holder.pid}" in err[0]
        assert sorted(path.name for path in run_dir.iterdir()) == [session.RUN_LOCK, "train.log"]
    finally:
        holder.kill()
        holder.wait()
    assert _train(prepared_work, run_dir, "--set", "EPOCHS=1", "--set", "BATCHES_PER_EPOCH=1") == 0  # killed: free


# Runs train.py and SIGKILLs itself after two batches of epoch 2 (mid-epoch, after epoch 1's checkpoints).
KILLED_IN_EPOCH_2 = """
import os, signal, sys
import train
from utils.train import session
real_train_epoch, calls = session.train_epoch, []

def killed_in_the_second_epoch(model, batches, *args, **kwargs):
    calls.append(1)
    if len(calls) < 2:
        return real_train_epoch(model, batches, *args, **kwargs)
    def two_then_killed():
        for number, batch in enumerate(batches):
            if number == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch
    return real_train_epoch(model, two_then_killed(), *args, **kwargs)

session.train_epoch = killed_in_the_second_epoch
sys.exit(train.main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGKILL")
def test_a_run_killed_mid_epoch_resumes_from_its_last_saved_epoch(prepared_work, tmp_path):
    run_dir = tmp_path / "killed"
    args = ["--work-dir", str(prepared_work), "--run-dir", str(run_dir), *QUICK, "--set", "EPOCHS=2",
            "--set", "BATCHES_PER_EPOCH=3"]
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_EPOCH_2, *args], cwd=REPO, capture_output=True,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    saved = load_checkpoint(run_dir / "last.pt")
    assert saved["epoch"] == 1
    steps_saved = max(int(s["step"]) for s in saved["optimizer_state"]["state"].values())
    assert train.main(["--work-dir", str(prepared_work), "--run-dir", str(run_dir), "--resume"]) == 0
    assert pd.read_csv(run_dir / "log.csv")["epoch"].tolist() == [1, 2]  # epoch 2 trained again, whole
    after = load_checkpoint(run_dir / "last.pt")
    assert after["epoch"] == 2
    assert max(int(s["step"]) for s in after["optimizer_state"]["state"].values()) == steps_saved + 3


def test_train_model_trains_as_train_py(prepared_work, tmp_path, monkeypatch, capsys):
    """utils/train/session.py's example: train_model is train.py from Python (the same run folder and weights)."""
    from docs_examples import docstring_example

    code = docstring_example(session)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(prepared_work, tmp_path / "work")
    exec(compile(code, "session.py", "exec"), {"__name__": "docstring_example"})
    run_dir = tmp_path / "work" / "runs" / "quick"
    assert session.log.handlers == []  # train.log closed: a second run in this process writes its own
    printed = capsys.readouterr().out.splitlines()[-1]  # after the log lines
    assert {"best.pt", "last.pt", "log.csv", "config.json", "train.log"} <= set(eval(printed))
    by_script = tmp_path / "by_script"
    assert train.main(["--work-dir", "work", "--run-dir", str(by_script), "--preset", "improved", "--set", "EPOCHS=1",
                       "--set", "BATCHES_PER_EPOCH=2", "--set", "VAL_BSCANS=1"]) == 0
    ours, theirs = (load_checkpoint(folder / "last.pt")["model_state"] for folder in (run_dir, by_script))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[name], theirs[name]) for name in ours)
    with pytest.raises(ConfigError, match="preset 'improve': expected one of"):
        session.train_model("work", preset="improve")
    with pytest.raises(ConfigError, match="already holds a run"):
        session.train_model("work", run_dir, EPOCHS=1)


def test_snapshot_cycles_save_each_cycles_last_weights(prepared_work, tmp_path, capsys):
    run = tmp_path / "snapshots"
    assert _train(prepared_work, run, "--set", "MODEL=smp_unet", "--set", "BATCHES_PER_EPOCH=1", "--set", "EPOCHS=4",
                  "--set", "LR_SCHEDULE=poly", "--set", "SNAPSHOT_CYCLES=2") == 0
    first, second = load_checkpoint(run / "snapshot1.pt"), load_checkpoint(run / "snapshot2.pt")
    assert (first["epoch"], second["epoch"]) == (2, 4) and not (run / "snapshot3.pt").exists()
    assert torch.equal(second["model_state"]["segmentation_head.0.weight"],
                       load_checkpoint(run / "last.pt")["model_state"]["segmentation_head.0.weight"])
    assert _train(prepared_work, tmp_path / "odd", "--set", "LR_SCHEDULE=poly", "--set", "EPOCHS=3",
                  "--set", "SNAPSHOT_CYCLES=2") == 2  # cycles that do not divide the epochs: refused in one line
    assert "SNAPSHOT_CYCLES=2: expected 1, or a divisor of EPOCHS=3" in capsys.readouterr().err
