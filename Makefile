# The two commands of the README: `make demo` and `make test`. Both build the
# virtual environment from this repository's own files first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/oneroof demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n 2

test-all: $(STAMP)
	$(BIN)/pytest -n 2 -m ''

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/suite.py
	$(BIN)/python bench/fingerprint.py
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/live.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
