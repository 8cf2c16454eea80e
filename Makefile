# Everything runs from a local virtual environment that these targets create (.venv).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes (pytest-xdist): one per core, at most four (each gets databases of its own).
TEST_WORKERS ?= auto

.PHONY: help install demo test test-index lint typecheck check bench clean

help:
	@echo "make demo       install the runtime into $(VENV), then run the demo (emulator + SQLite)"
	@echo "make test       install with test extras, then run the test suite (offline once installed)"
	@echo "make test-index the tests that install packages from the index (packaging, container)"
	@echo "make check      lint, type-check and test"
	@echo "make bench      benchmarks against the emulator; report in bench/results/"

RUNTIME := $(VENV)/.runtime-installed

# The runtime only (no test tools, no database driver: the demo uses SQLite), timed.
$(RUNTIME): pyproject.toml
	@start=$$(date +%s%N); \
	$(PYTHON) -m venv $(VENV) && \
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e . && \
	end=$$(date +%s%N) && \
	ms=$$(( (end - start) / 1000000 )) && \
	echo "installed comm100-sync (runtime only) into $(VENV) in $$((ms / 1000)).$$((ms % 1000 / 100)) s"
	@touch $@

# The test extras on top: the drivers, pytest and the tools the suite drives.
$(STAMP): pyproject.toml $(RUNTIME)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# dbt for tests/dbt, in an environment of its own (deploy/dbt/requirements.txt says why); the
# copy of the requirements inside it tells tests/dbt it is current.
DBT_VENV ?= .venv-dbt
DBT_STAMP := $(DBT_VENV)/requirements.txt

$(DBT_STAMP): deploy/dbt/requirements.txt
	rm -rf $(DBT_VENV)
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $<
	cp $< $@

install: $(RUNTIME)

demo: $(RUNTIME)
	$(BIN)/comm100-sync demo

# Once the environment is installed, the suite needs no package index; the few tests that
# install from it are marked needs_index and run by `make test-index` (and .ci/run).
test: $(STAMP) $(DBT_STAMP)
	SYNC_TEST_DBT_VENV=$(abspath $(DBT_VENV)) $(BIN)/python -m pytest -m "not needs_index" \
	  -n $(TEST_WORKERS) --maxprocesses=4 $(PYTEST_ARGS)

test-index: $(STAMP)
	$(BIN)/python -m pytest -m needs_index $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check sync migrations tests
	$(BIN)/ruff check sync migrations tests

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The benchmarks' extras (matplotlib for the chart, pyinstrument for profiles) on top of install.
$(VENV)/.bench-installed: pyproject.toml $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(DBT_VENV) $(DBT_VENV).lock build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
