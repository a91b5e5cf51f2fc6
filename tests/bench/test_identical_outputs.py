"""bench/identical_outputs.py: what is hashed (the work folder's path made neutral, run locks left out) and how two
records compare."""

from __future__ import annotations

import json

from bench.identical_outputs import differences, file_hashes, main


def test_hashes_ignore_where_the_run_happened_and_its_locks(tmp_path):
    records = []
    for name in ("a", "b"):
        work = tmp_path / name
        (work / "case").mkdir(parents=True)
        (work / "case" / "marker.json").write_text(json.dumps({"oct_path": str(work / "data" / "oct.mhd")}))
        (work / ".predict.lock").write_text(f'{{"pid": {len(records) + 100}}}')
        records.append(file_hashes(work))
    assert records[0] == records[1] and list(records[0]) == ["case/marker.json"]
    (tmp_path / "b" / "case" / "marker.json").write_text('{"oct_path": "elsewhere"}')
    assert file_hashes(tmp_path / "b") != records[0]


def test_compare_names_each_difference_and_exits_1(tmp_path, capsys):
    first, second = tmp_path / "first.json", tmp_path / "second.json"
    first.write_text(json.dumps({"files": {"same": "1", "changed": "2", "gone": "3"}}))
    second.write_text(json.dumps({"files": {"same": "1", "changed": "4", "new": "5"}}))
    assert differences({"x": "1"}, {"x": "1"}) == []
    assert main(["--compare", str(first), str(second)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        "differs: changed", "only in the first: gone", "only in the second: new", "4 files, 3 difference(s)"]
    assert main(["--compare", str(first), str(first)]) == 0


def test_a_training_run_is_recorded_by_its_weights_and_logged_values_not_its_bytes(tmp_path):
    """Checkpoint bytes and train.log's times vary between identical runs; the weights and log values do not."""
    import torch

    records = []
    for name, seconds, zip_name in (("a", "1.5", "first"), ("b", "9.0", "second")):
        run = tmp_path / name / "training" / "run"
        run.mkdir(parents=True)
        state = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "count": torch.tensor(3)}
        torch.save({"model_state": state, "epoch": 2}, run / "best.pt", _use_new_zipfile_serialization=True)
        archive = (run / "best.pt").read_bytes()
        (run / "best.pt").write_bytes(archive.replace(b"best", zip_name[:4].encode()))  # another inner name
        (run / "log.csv").write_text(f"epoch,train_loss,seconds\n1,0.5,{seconds}\n")
        (run / "train.log").write_text(f"took {seconds} s\n")
        records.append(file_hashes(tmp_path / name))
    assert list(records[0]) == ["training/run/best.pt#weights", "training/run/log.csv#values"]
    assert records[0] == records[1]
    run = tmp_path / "b" / "training" / "run"
    (run / "log.csv").write_text("epoch,train_loss,seconds\n1,0.6,9.0\n")
    torch.save({"model_state": {"weight": torch.zeros(2, 3), "count": torch.tensor(3)}}, run / "best.pt")
    changed = file_hashes(tmp_path / "b")
    assert all(changed[name] != records[0][name] for name in records[0])
