# Two entry points for a fresh machine (Python 3.11, nothing installed):
#   make run    fit a BNN by SVI and by NUTS on a bundled data set; writes runs/demo/
#   make test   the whole test suite (unit tests, doctests, notebooks)
# Each creates .venv and installs the pinned dependencies first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast typecheck bench notebooks clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,notebooks]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/probgen demo --out runs/demo

test: $(STAMP)
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest

notebooks: $(STAMP)
	$(BIN)/python tutorials/execute.py

typecheck: $(STAMP)
	$(BIN)/python -m mypy

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" tests probgen

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bnn_svi.py
	$(BIN)/python benchmarks/bnn_nuts.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache
