PYTHON ?= python3.9
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: setup lint test test-all demo bench clean

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

bench: setup
	$(PY) benchmarks/fullsum.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
