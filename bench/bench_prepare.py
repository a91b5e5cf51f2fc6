"""Time of each prepare_data.py stage, per B-scan and per volume, on full-size synthetic volumes.

    python bench/bench_prepare.py [--vendors Cirrus,Spectralis] [--baseline-bscans 2]

Generates one full-size synthetic case per vendor (Cirrus 128x1024x512 uint8, Spectralis 49x496x512 uint16) in a
temporary folder, times every stage in this process (the preprocessing steps as ``preprocess_volume`` applies them,
:func:`utils.prepare.preprocessing.vendor_steps`; the parts of the ROI), the whole volume through the Python
API (:class:`utils.prepare.preparer.Preparer`, in memory), then the whole ``prepare_data.py`` run of that one case
(one worker: a case is never split across processes), and the straightforward scikit-image ROI
(rank entropy + binary_closing) on a few B-scans for comparison. Prints a Markdown table of the stages, then per
vendor the straightforward ROI's time per volume over the whole run's time per volume, both from that table
(issue 11: about 30x, target >= 50x; the ROI is extrapolated from ``--baseline-bscans`` B-scans).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import prepare_data  # noqa: E402
from utils.configuration import load_config  # noqa: E402
from utils.io.files import atomic_write_png  # noqa: E402
from utils.io.mhd_io import read_volume  # noqa: E402
from utils.io.vendor_files import VendorFileSettings  # noqa: E402
from utils.prepare.preparer import Preparer  # noqa: E402
from utils.prepare.preprocessing import PreprocessSettings, histogram_reference, vendor_steps  # noqa: E402
from utils.prepare.roi import (ENTROPY_LEVELS, binary_closing_disk, fill_columns, local_entropy,  # noqa: E402
                               roi_mask_reference)
from utils.synthetic import case_spec, generate_volume  # noqa: E402
from utils.io.mhd_io import write_volume  # noqa: E402

BASELINE_STAGE = "straightforward scikit-image ROI (for comparison)"
WHOLE_RUN_STAGE = "whole prepare_data.py run (1 worker)"
API_STAGE = "Preparer.prepare: read, preprocess, ROI (in memory)"


class Stopwatch:
    def __init__(self):
        self.rows: list[tuple[str, float, int]] = []

    def time(self, stage: str, n_bscans: int, function, *args):
        start = time.perf_counter()
        result = function(*args)
        self.rows.append((stage, time.perf_counter() - start, n_bscans))
        return result


def bench_vendor(vendor: str, folder: Path, reference: dict, cfg, baseline_bscans: int) -> list[tuple]:
    case = folder / "data" / vendor / "BENCH001"
    volume_raw, labels, geometry = generate_volume(vendor, np.random.default_rng(5), case_spec(vendor, 0),
                                                   fluids=("IRF", "SRF"))
    write_volume(case / "oct.mhd", volume_raw, geometry)
    write_volume(case / "reference.mhd", labels, geometry)
    n = volume_raw.shape[0]
    watch = Stopwatch()
    volume, _ = watch.time("read oct.mhd", n, read_volume, case / "oct.mhd")
    for stage, step in vendor_steps(vendor, np.asarray(reference["counts"]), PreprocessSettings.from_config(cfg)):
        volume = watch.time(stage, n, step, volume)
    out = folder / "pngs" / vendor
    watch.time("write image + mask PNGs", n, lambda: [
        (atomic_write_png(out / f"i{z}.png", volume[z]), atomic_write_png(out / f"m{z}.png", labels[z]))
        for z in range(n)])
    entropies = watch.time("ROI: local entropy disk(15)", n, lambda: [
        local_entropy(ENTROPY_LEVELS[volume[z]], cfg.ENTROPY_DISK_RADIUS) for z in range(n)])
    thresholded = [(e / (e.max() + 1e-16) > cfg.ENTROPY_THRESHOLD) | (labels[z] > 0)
                   for z, e in enumerate(entropies)]
    closed = watch.time("ROI: closing disk(55)", n, lambda: [
        binary_closing_disk(mask, cfg.CLOSING_DISK_RADIUS) for mask in thresholded])
    watch.time("ROI: column fill", n, lambda: [fill_columns(mask) for mask in closed])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        watch.time(BASELINE_STAGE, baseline_bscans, lambda: [
            roi_mask_reference(volume[z], labels[z], cfg.ENTROPY_DISK_RADIUS, cfg.ENTROPY_THRESHOLD,
                               cfg.CLOSING_DISK_RADIUS) for z in range(baseline_bscans)])
    prepared = watch.time(API_STAGE, n, Preparer(reference).prepare, case / "oct.mhd")
    if not np.array_equal(prepared.image, volume) or not np.array_equal(prepared.labels, labels):
        raise SystemExit(f"the {vendor} volume prepared by Preparer differs from the one of the stages timed above")
    start = time.perf_counter()
    status = prepare_data.main(["--data-root", str(folder / "data" / vendor), "--work-dir",
                                str(folder / "work" / vendor), "--workers", "1",
                                "--set", f"HISTOGRAM_REFERENCE={reference['path']}"])
    watch.rows.append((WHOLE_RUN_STAGE, time.perf_counter() - start, n))
    if status:
        raise SystemExit(f"prepare_data failed on the {vendor} volume")
    return [(vendor, "x".join(map(str, volume_raw.shape)), *row) for row in watch.rows]


def baseline_over_whole_run(rows: list[tuple]) -> dict[str, float]:
    """Per vendor, the straightforward scikit-image ROI's time per B-scan over the whole prepare_data.py run's
    (= their times per volume: the volume's B-scan count cancels).

    Args:
        rows: ``(vendor, volume shape, stage, seconds, B-scans timed)`` as :func:`bench_vendor` returns them.

    Returns:
        Vendor -> ratio (> 1: the straightforward ROI alone is slower than the whole run), in the rows' order.
    """
    per_bscan_s = {(vendor, stage): seconds / n_bscans for vendor, _, stage, seconds, n_bscans in rows}
    vendors = dict.fromkeys(row[0] for row in rows)
    return {vendor: per_bscan_s[vendor, BASELINE_STAGE] / per_bscan_s[vendor, WHOLE_RUN_STAGE] for vendor in vendors}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vendors", default="Cirrus,Spectralis")
    parser.add_argument("--baseline-bscans", type=int, default=2, help="B-scans for the scikit-image baseline")
    args = parser.parse_args(argv)
    cfg = load_config()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spectralis, labels, geometry = generate_volume("Spectralis", np.random.default_rng(9),
                                                       case_spec("Spectralis", 0))
        write_volume(folder / "reference" / "oct.mhd", spectralis, geometry)
        reference = histogram_reference(folder / "reference" / "oct.mhd", VendorFileSettings.from_config(cfg))
        for vendor in args.vendors.split(","):
            rows += bench_vendor(vendor, folder, reference, cfg, args.baseline_bscans)
    print("\n| vendor | volume (z x y x x) | stage | per B-scan (ms) | per volume (s) |")
    print("|---|---|---|---|---|")
    for vendor, shape, stage, seconds, n_bscans in rows:
        n_volume = int(shape.split("x")[0])
        per_bscan = seconds / n_bscans
        print(f"| {vendor} | {shape} | {stage} | {per_bscan * 1000:.1f} | {per_bscan * n_volume:.2f} |")
    print("\n| vendor | straightforward scikit-image ROI per volume / whole prepare_data.py run per volume |")
    print("|---|---|")
    for vendor, ratio in baseline_over_whole_run(rows).items():
        print(f"| {vendor} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
