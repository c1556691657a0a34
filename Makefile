PYTHON ?= python3.9
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

BENCH_PYTHON ?= python3.11
BENCH_VENV   ?= .bench-venv

.PHONY: setup lint test test-all demo bench bench-env clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(VENV)/bin/ruff check fsalign tests recipes benchmarks examples
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(PY) -m pytest -q

test-all: lint
	$(PY) -m pytest -q -m ''

demo: setup
	$(PY) recipes/demo.py

# a second environment with torch 2.x for the baselines that need it (torchaudio's forced_align)
$(BENCH_VENV)/.installed:
	$(BENCH_PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet torch==2.14.1 torchaudio==2.11.0 numpy
	touch $@

bench-env: $(BENCH_VENV)/.installed

bench: setup bench-env
	$(PY) benchmarks/viterbi.py --bench-python $(BENCH_VENV)/bin/python
	$(PY) benchmarks/fullsum.py --bench-python $(BENCH_VENV)/bin/python

clean:
	rm -rf $(VENV) $(BENCH_VENV) *.egg-info .pytest_cache
