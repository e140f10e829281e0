# The two set-up commands of the README: `make demo` and `make test`. Each creates or
# reuses a virtualenv in .venv and installs what it needs; nothing else is assumed but
# python3 (>= 3.10) with pip and venv. `make test` also makes sure a redis-server binary
# exists (installing Debian's package when it can), since the store tests start their own,
# and a Chromium binary, which the dashboard's browser tests drive headless.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEV_STAMP := $(VENV)/.dev-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
BASE_STAMP := $(VENV)/.base-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck bench bench-quick prices prices-check clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(BASE_STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(DEV_STAMP): $(VENV)/bin/python pyproject.toml
	$(PY) -m pip install -q -e '.[dev]'
	touch $@ $(BASE_STAMP)

demo: $(BASE_STAMP)
	$(PY) -m agent_budget demo

test: $(DEV_STAMP)
	bash scripts/ensure-redis-server
	bash scripts/ensure-chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(DEV_STAMP)
	bash scripts/ensure-redis-server
	$(PY) -m benchmarks

bench-quick: $(DEV_STAMP)
	$(PY) -m benchmarks --quick

# Regenerate the price catalogue from the installed genai-prices (pinned in the dev extra);
# `pip install -U genai-prices`, bump the pin, then `make prices` to take newer prices.
prices: $(DEV_STAMP)
	$(PY) scripts/make_prices.py

prices-check: $(DEV_STAMP)
	$(PY) scripts/make_prices.py --check

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
