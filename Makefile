# make test : create/refresh .venv from requirements.txt, then run the test suite
# make demo : the whole pipeline on DATA_ROOT (the synthetic set when it holds no volumes)
# make bench: the benchmark scripts of bench/ (tables as in docs/benchmarks.md)
# make quality: bench/quality.py, the pipeline on the synthetic and the real development set (about 2 h on 2 cores)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo bench quality clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) demo.py

bench: $(STAMP)
	$(PY) bench/bench_prepare.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_predict.py

quality: $(STAMP)
	$(PY) bench/quality.py --dataset both --configs default,smp_unet --budget-minutes 15
	$(PY) bench/quality.py --table-only

clean-venv:
	rm -rf $(VENV)
