"""Hand-computed tables for utils/train/metrics.py."""

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import config
from utils.train import metrics

IRF, SRF, PED = config.FLUIDS["IRF"], config.FLUIDS["SRF"], config.FLUIDS["PED"]
N_CLASSES, FLUIDS = config.N_CLASSES, config.FLUIDS
NAN = float("nan")

# One 3x3 image. Per class (tp, fp, fn, tn):
#   background: reference {(0,0),(1,0),(2,2)}, prediction {(0,0),(1,2),(2,0)} -> 1, 2, 2, 4
#   IRF: reference {(0,1),(0,2)}, prediction {(0,1),(0,2),(1,0)}            -> 2, 1, 0, 6
#   SRF: reference {(1,1),(1,2)}, prediction {(1,1)}                        -> 1, 0, 1, 7
#   PED: reference {(2,0),(2,1)}, prediction {(2,1),(2,2)}                  -> 1, 1, 1, 6
REFERENCE = torch.tensor([[[0, 1, 1],
                           [0, 2, 2],
                           [3, 3, 0]]])
PREDICTION = torch.tensor([[[0, 1, 1],
                            [1, 2, 0],
                            [0, 3, 3]]])
EXPECTED = {  # metric -> (background, IRF, SRF, PED)
    "dice": (2 / 6, 4 / 5, 2 / 3, 2 / 4),
    "iou": (1 / 5, 2 / 3, 1 / 2, 1 / 3),
    "precision": (1 / 3, 2 / 3, 1 / 1, 1 / 2),
    "recall": (1 / 3, 2 / 2, 1 / 2, 1 / 2),
}


def one_hot_logits(labels, n_classes=config.N_CLASSES, margin=10.0):
    """(N, C, H, W) float scores whose argmax is ``labels``."""
    return margin * torch.nn.functional.one_hot(labels, n_classes).permute(0, 3, 1, 2).float()


def nan_equal(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_confusion_counts_hand_table():
    tp, fp, fn, tn = metrics.confusion_counts(PREDICTION, REFERENCE, N_CLASSES)
    assert tp.tolist() == [[1, 2, 1, 1]]
    assert fp.tolist() == [[2, 1, 0, 1]]
    assert fn.tolist() == [[2, 0, 1, 1]]
    assert tn.tolist() == [[4, 6, 7, 6]]
    assert tp.dtype == torch.int64


def test_confusion_counts_from_logits_equal_counts_from_labels():
    from_logits = metrics.confusion_counts(one_hot_logits(PREDICTION), REFERENCE, N_CLASSES)
    from_labels = metrics.confusion_counts(PREDICTION, REFERENCE, N_CLASSES)
    for a, b in zip(from_logits, from_labels):
        assert torch.equal(a, b)


@pytest.mark.parametrize("metric", list(EXPECTED))
def test_scores_hand_table(metric):
    tp, fp, fn, _ = metrics.confusion_counts(PREDICTION, REFERENCE, N_CLASSES)
    scores = metrics.SCORE_FUNCTIONS[metric](tp[0], fp[0], fn[0])
    assert scores.tolist() == pytest.approx(EXPECTED[metric])


def test_named_scores_hand_table_and_fluid_mean_excludes_background():
    tp, fp, fn, _ = (count[0] for count in metrics.confusion_counts(PREDICTION, REFERENCE, N_CLASSES))
    results = metrics.named_scores(tp, fp, fn, FLUIDS)
    assert list(results) == [f"{metric}_{fluid}" for metric in metrics.METRICS
                             for fluid in ("IRF", "SRF", "PED", "mean_fluid")]
    for metric, expected in EXPECTED.items():
        for fluid, code in config.FLUIDS.items():
            assert results[f"{metric}_{fluid}"] == pytest.approx(expected[code])
        assert results[f"{metric}_mean_fluid"] == pytest.approx(sum(expected[1:]) / 3)
    # The background Dice (1/3) would pull the mean down to 0.575 if it were included.
    assert results["dice_mean_fluid"] == pytest.approx((0.8 + 2 / 3 + 0.5) / 3)


@pytest.mark.parametrize("metric", list(EXPECTED))
def test_perfect_prediction_scores_one(metric):
    reference = torch.tensor([[[0, 1, 2], [3, 3, 0]], [[2, 2, 1], [0, 0, 3]]])
    tp, fp, fn, _ = metrics.confusion_counts(one_hot_logits(reference), reference, N_CLASSES)
    assert metrics.SCORE_FUNCTIONS[metric](tp, fp, fn).tolist() == [[1.0] * 4, [1.0] * 4]


@pytest.mark.parametrize("tp, fp, fn, empty_score, expected", [
    # metric -> value, for (dice, iou, precision, recall)
    (0, 0, 0, NAN, (NAN, NAN, NAN, NAN)),  # absent from both: empty_score
    (0, 0, 0, 1.0, (1.0, 1.0, 1.0, 1.0)),
    (0, 0, 0, 0.0, (0.0, 0.0, 0.0, 0.0)),
    (0, 3, 0, NAN, (0.0, 0.0, 0.0, 0.0)),  # absent from the reference only: recall 0/0 -> 0; Dice 0, not MONAI's NaN
    (0, 0, 3, NAN, (0.0, 0.0, 0.0, 0.0)),  # absent from the prediction only: precision 0/0 -> 0
    (0, 3, 0, 1.0, (0.0, 0.0, 0.0, 0.0)),  # empty_score touches the empty case alone
    (2, 1, 2, NAN, (4 / 7, 2 / 5, 2 / 3, 1 / 2)),
])
def test_empty_rule(tp, fp, fn, empty_score, expected):
    counts = [torch.tensor([value]) for value in (tp, fp, fn)]
    for metric, value in zip(metrics.METRICS, expected):
        assert nan_equal(metrics.SCORE_FUNCTIONS[metric](*counts, empty_score=empty_score).item(), value), metric


def test_fluid_mean_follows_the_empty_rule():
    # PED absent from both prediction and reference.
    reference = torch.tensor([[[0, 1, 1], [0, 2, 2]]])
    prediction = torch.tensor([[[0, 1, 0], [0, 2, 2]]])
    tp, fp, fn, _ = (count[0] for count in metrics.confusion_counts(prediction, reference, N_CLASSES))
    left_out = metrics.named_scores(tp, fp, fn, FLUIDS)
    assert math.isnan(left_out["dice_PED"])
    assert left_out["dice_mean_fluid"] == pytest.approx((2 / 3 + 1.0) / 2)
    counted = metrics.named_scores(tp, fp, fn, FLUIDS, empty_score=1.0)
    assert counted["dice_PED"] == 1.0
    assert counted["dice_mean_fluid"] == pytest.approx((2 / 3 + 1.0 + 1.0) / 3)
    # No fluid anywhere: nothing measured, the mean is NaN too.
    nothing = metrics.named_scores(*(count[0] for count in metrics.confusion_counts(
        torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2, dtype=torch.int64), N_CLASSES)[:3]), FLUIDS)
    assert math.isnan(nothing["dice_mean_fluid"])


def test_meter_two_batches_equal_one_concatenated_batch():
    generator = torch.Generator().manual_seed(0)
    references = torch.randint(0, 4, (5, 8, 6), generator=generator)
    logits = torch.randn(5, 4, 8, 6, generator=generator)
    split = metrics.SegmentationMeter(N_CLASSES, FLUIDS)
    split.update(logits[:2], references[:2])
    split.update(logits[2:], references[2:])
    whole = metrics.SegmentationMeter(N_CLASSES, FLUIDS)
    whole.update(logits, references)
    assert torch.equal(split.counts, whole.counts)
    assert split.compute() == whole.compute()
    assert int(whole.counts[:, 0].sum()) == 5 * 8 * 6  # every pixel counted once per class


def test_meter_micro_averages_over_pixels_and_resets():
    meter = metrics.SegmentationMeter(N_CLASSES, FLUIDS)
    meter.update(PREDICTION, REFERENCE)
    meter.update(REFERENCE, REFERENCE)  # adds IRF tp 2, SRF tp 2, PED tp 2
    results = meter.compute()
    assert results["dice_IRF"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 0))
    assert results["recall_SRF"] == pytest.approx(3 / 4)
    meter.reset()
    assert int(meter.counts.sum()) == 0
    assert math.isnan(meter.compute()["dice_mean_fluid"])


@pytest.mark.parametrize("prediction, reference, message", [
    (torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.int64), r"C = 4"),
    (torch.zeros(1, 2, 2, dtype=torch.int32), torch.zeros(1, 2, 2, dtype=torch.int64), r"int64 labels"),
    (torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 3, dtype=torch.int64), r"shape of prediction"),
    (torch.zeros(1, 2, 2, dtype=torch.int64), torch.full((1, 2, 2), 4), r"0\.\.3, got values from 4 to 4"),
    (torch.full((1, 2, 2), -1), torch.zeros(1, 2, 2, dtype=torch.int64), r"prediction: expected label codes"),
    (torch.zeros(1, 2, 2, dtype=torch.int64), torch.zeros(1, 2, 2), r"reference: expected dtype torch.int64"),
    (torch.zeros(2, 2, dtype=torch.int64), torch.zeros(2, 2, dtype=torch.int64), r"\(N, H, W\), got \(2, 2\)"),
])
def test_bad_inputs_raise_value_error(prediction, reference, message):
    with pytest.raises(ValueError, match=message):
        metrics.SegmentationMeter(N_CLASSES, FLUIDS).update(prediction, reference)


def test_meter_sums_the_counts_of_processes(monkeypatch):
    meter = metrics.SegmentationMeter(N_CLASSES, FLUIDS)
    meter.update(PREDICTION, REFERENCE)
    local = meter.counts.clone()

    def all_reduce_with_a_twin(tensor, op):  # a second rank that saw the same batch
        tensor += local.to(tensor.device)

    monkeypatch.setattr(metrics.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(metrics.dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(metrics.dist, "all_reduce", all_reduce_with_a_twin)
    assert torch.equal(meter.all_reduce_counts(), 2 * local)
    assert torch.equal(meter.all_reduce_counts(), 2 * local)  # never reduces its own counts twice
    assert torch.equal(meter.counts, local)
    assert meter.compute(distributed=False) == meter.compute()  # doubling every count leaves ratios


DDP_SCRIPT = """
import sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from utils.train.metrics import SegmentationMeter


def worker(rank, init_file, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    generator = torch.Generator().manual_seed(0)
    references = torch.randint(0, 4, (4, 8, 6), generator=generator)
    predictions = torch.randint(0, 4, (4, 8, 6), generator=generator)
    meter = SegmentationMeter(4, {"IRF": 1, "SRF": 2, "PED": 3})
    meter.update(predictions[2 * rank:2 * rank + 2], references[2 * rank:2 * rank + 2])
    queue.put((rank, meter.compute()))
    dist.destroy_process_group()


if __name__ == "__main__":
    # fork: the workers share this process's imports (fast); nothing has run a parallel region yet.
    queue = mp.get_context("fork").SimpleQueue()
    mp.start_processes(worker, args=(sys.argv[1], queue), nprocs=2, start_method="fork")
    generator = torch.Generator().manual_seed(0)
    references = torch.randint(0, 4, (4, 8, 6), generator=generator)
    predictions = torch.randint(0, 4, (4, 8, 6), generator=generator)
    single = SegmentationMeter(4, {"IRF": 1, "SRF": 2, "PED": 3})
    single.update(predictions, references)
    results = dict(queue.get() for _ in range(2))
    assert results[0] == results[1] == single.compute(), (results, single.compute())
    print("ok")
"""


def test_meter_under_two_gloo_processes(tmp_path):
    script = tmp_path / "ddp_meter.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    repo = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "init")], cwd=repo, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(repo)})
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]


@pytest.mark.parametrize("ignore_label", [config.IGNORE_LABEL, 200])
def test_ignored_reference_pixels_are_counted_nowhere(ignore_label):
    reference = REFERENCE.clone()
    reference[0, :, 2] = ignore_label  # the last column left out
    tp, fp, fn, tn = metrics.confusion_counts(PREDICTION, reference, N_CLASSES, ignore_label)
    kept = metrics.confusion_counts(PREDICTION[..., :2].contiguous(), REFERENCE[..., :2].contiguous(), N_CLASSES)
    for counts, expected in zip((tp, fp, fn, tn), kept):
        assert counts.tolist() == expected.tolist()
    meter = metrics.SegmentationMeter(N_CLASSES, FLUIDS, ignore_label=ignore_label)
    meter.update(one_hot_logits(PREDICTION), reference)
    assert meter.counts.tolist() == torch.stack([count.sum(dim=0) for count in kept]).tolist()
    with pytest.raises(ValueError, match="expected label codes 0..3"):  # a code the meter was not given
        metrics.SegmentationMeter(N_CLASSES, FLUIDS).update(PREDICTION, reference)
