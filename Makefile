# The two commands a newcomer runs (see README.md):
#   make demo   set everything up, generate demo data and run the batch job on it (ends with the run summary)
#   make test   set everything up, lint (ruff, mypy) and run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PERSONS ?= 2000
LAKE ?= ./lake

.PHONY: setup demo test lint clean

$(BIN)/audience-activation: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/audience-activation

demo: setup
	$(BIN)/audience-activation demo-data --persons $(PERSONS) --lake-root $(LAKE)
	$(BIN)/audience-activation validate --lake-root $(LAKE)
	$(BIN)/audience-activation run --lake-root $(LAKE)

test: setup
	$(BIN)/ruff check src tests jobs benchmarks
	$(BIN)/mypy
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check src tests jobs
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info $(LAKE)
