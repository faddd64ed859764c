# The two commands: `make run` (demo on the embedded SQLite database) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.install.stamp
FLASK := $(BIN)/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 5000

.PHONY: install run test test-fast lint audit bench

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The venv's own setuptools (65.5 from Python 3.11) has known advisories, fixed by 78.1.1 (make audit).
	$(BIN)/python -m pip install --quiet --upgrade pip "setuptools>=78.1.1"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

run: install
	$(FLASK) db upgrade
	$(FLASK) seed-demo
	@echo "serving http://$(HOST):$(PORT) with the scheduler beside it (Ctrl-C stops both)"
	@trap 'kill $$scheduler 2>/dev/null' EXIT INT TERM; \
	$(FLASK) run-scheduler & scheduler=$$!; \
	$(FLASK) run --host $(HOST) --port $(PORT)

test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow" -x -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

audit: install
	$(BIN)/python .ci/audit.py

# All of bench/ by default (about an hour); `make bench BENCH="load sla_tick"` runs the ones named.
BENCH ?= $(basename $(notdir $(wildcard bench/*.py)))
bench: install
	@for name in $(BENCH); do echo "== bench/$$name.py"; $(BIN)/python bench/$$name.py || exit 1; done
