# `make demo` and `make test` each set up .venv first (torch pinned to the local CPU build).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test lint types bench llamafactory-check

# What ruff checks; mypy's files are in pyproject.toml ([tool.mypy]).
LINTED := uftdata uft_train uft_miniature tests bench

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

# Lint, then types, then the tests (tests/test_size.py holds the size budget); the first failure stops.
test: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/mypy
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/python -m pytest -q

lint: install
	$(VENV)/bin/ruff check $(LINTED)

types: install
	$(VENV)/bin/mypy

# LLaMA-Factory 0.9.5's own data loading on the demo export (scripts/llamafactory_check.sh). Builds
# .venv-lf once (torch 2.9.1 from PyPI, about 8 GB, minutes); not part of `make test` or CI.
llamafactory-check: install
	VENV=$(VENV) bash scripts/llamafactory_check.sh
