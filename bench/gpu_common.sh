# Sourced by bench/gpu_check.sh and bench/gpu_levers.sh: the repository as the working folder, PYTHON (default
# .venv/bin/python, else python3), an exit 0 with one line when torch sees no CUDA GPU, and real_data (the
# --real-data arguments for bench/quality.py when REAL_DATA is set).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "bench/$(basename "$0"): no CUDA GPU on this machine (torch sees none); nothing run"
    exit 0
fi
real_data=()
if [ -n "${REAL_DATA:-}" ]; then real_data=(--real-data "$REAL_DATA"); fi
