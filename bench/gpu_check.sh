#!/usr/bin/env bash
# The authors' method at its own schedule, and the best preset at a long one, on the real development set: a check
# for a machine with a CUDA GPU, in under 10 minutes on one H200.
#
#     bench/gpu_check.sh [OUT]        # default OUT: work/quality-gpu (git-ignored: results of real scans)
#
# Runs bench/quality.py on the real set (built by ../shared/data/duke_dev/build.py into each run's folder, about 10
# s each; REAL_DATA=DIR uses a set built once instead) for `default` (the authors' method, config.py as it is) at its 100 epochs (one pass each) and
# `PRESET_CONFIG` (the configuration of --preset improved) at PRESET_EPOCHS epochs of 50 batches, both folds,
# seed 0. The four trainings (2 configurations x 2 folds) run at once, each with 3 loader workers (fold by fold,
# --only-fold, into folders under OUT), then prints the quality table that joins them. Without a CUDA GPU it
# says so in one line and exits 0: nothing to check here.
#
# Environment: PYTHON (default .venv/bin/python, else python3), REAL_DATA, PRESET_CONFIG, PRESET_EPOCHS,
# DEFAULT_EPOCHS (for a shorter check).
set -euo pipefail
source "$(dirname "$0")/gpu_common.sh"

OUT="${1:-work/quality-gpu}"
DEFAULT_EPOCHS="${DEFAULT_EPOCHS:-100}"
PRESET_CONFIG="${PRESET_CONFIG:-improved_strips_wide}"
PRESET_EPOCHS="${PRESET_EPOCHS:-60}"
mkdir -p "$OUT"

run() {  # config epochs fold
    "$PYTHON" bench/quality.py --dataset real --configs "$1" --epochs "$2" --only-fold "$3" --seeds 0 \
        --out "$OUT/$1-fold$3" "${real_data[@]}" --set LOADER_WORKERS=3 > "$OUT/$1-fold$3.log" 2>&1
}

start=$(date +%s)
pids=()
for fold in 1 2; do
    run default "$DEFAULT_EPOCHS" "$fold" & pids+=($!)
    run "$PRESET_CONFIG" "$PRESET_EPOCHS" "$fold" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
echo "trained and scored in $(( ($(date +%s) - start) / 60 )) min; logs: $OUT/*.log"
"$PYTHON" bench/quality.py --table-only --out "$OUT" || status=1
exit $status
