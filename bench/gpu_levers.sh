#!/usr/bin/env bash
# Screen the accuracy levers on the real development set on a machine with a CUDA GPU: every (config, seed, fold)
# of bench/quality.py trained as its own process, PARALLEL at a time, then the joined quality table.
#
#     bench/gpu_levers.sh [OUT]       # default OUT: work/quality-gpu-levers (git-ignored: results of real scans)
#
# The real set is built by ../shared/data/duke_dev/build.py into each process's folder (REAL_DATA=DIR: one built
# set for all). Environment: CONFIGS (comma-separated bench/quality.py configs; default: the preset and the newest
# lever, 512 x 512 strips), SEEDS (default 0,1,2), EPOCHS (default 15, the preset's budget), PARALLEL (default 4),
# PYTHON, REAL_DATA.
# Without a CUDA GPU it says so in one line and exits 0.
set -euo pipefail
source "$(dirname "$0")/gpu_common.sh"

OUT="${1:-work/quality-gpu-levers}"
CONFIGS="${CONFIGS:-improved_strips_wide,improved_strips_wide512}"
SEEDS="${SEEDS:-0,1,2}"
EPOCHS="${EPOCHS:-15}"
PARALLEL="${PARALLEL:-4}"
mkdir -p "$OUT"

start=$(date +%s)
status=0
running=0
for config in ${CONFIGS//,/ }; do
    for seed in ${SEEDS//,/ }; do
        for fold in 1 2; do
            "$PYTHON" bench/quality.py --dataset real --configs "$config" --seeds "$seed" --epochs "$EPOCHS" \
                --only-fold "$fold" --out "$OUT/$config-seed$seed-fold$fold" "${real_data[@]}" \
                --set LOADER_WORKERS=3 > "$OUT/$config-seed$seed-fold$fold.log" 2>&1 &
            running=$((running + 1))
            if [ "$running" -ge "$PARALLEL" ]; then
                wait -n || status=1
                running=$((running - 1))
            fi
        done
    done
done
while [ "$running" -gt 0 ]; do wait -n || status=1; running=$((running - 1)); done
echo "trained and scored in $(( ($(date +%s) - start) / 60 )) min; logs: $OUT/*.log"
"$PYTHON" bench/quality.py --table-only --out "$OUT" || status=1
exit $status
