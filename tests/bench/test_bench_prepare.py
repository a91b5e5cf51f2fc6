"""bench/bench_prepare.py: the ratio it prints from its table's rows."""

from __future__ import annotations

import pytest

from bench.bench_prepare import BASELINE_STAGE, WHOLE_RUN_STAGE, baseline_over_whole_run


def test_ratio_is_per_bscan_so_the_baseline_bscan_count_cancels():
    # the baseline is timed on 2 B-scans, the whole run on all 128 (Cirrus) and 49 (Spectralis)
    rows = [("Cirrus", "128x1024x512", "read oct.mhd", 0.2, 128),
            ("Cirrus", "128x1024x512", BASELINE_STAGE, 10.0, 2),      # 5 s per B-scan
            ("Cirrus", "128x1024x512", WHOLE_RUN_STAGE, 25.6, 128),   # 0.2 s per B-scan
            ("Spectralis", "49x496x512", BASELINE_STAGE, 8.0, 2),     # 4 s per B-scan
            ("Spectralis", "49x496x512", WHOLE_RUN_STAGE, 3.92, 49)]  # 0.08 s per B-scan
    ratios = baseline_over_whole_run(rows)
    assert list(ratios) == ["Cirrus", "Spectralis"]
    assert ratios["Cirrus"] == pytest.approx(25.0)
    assert ratios["Spectralis"] == pytest.approx(50.0)
