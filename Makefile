# The two commands a newcomer runs (see README.md):
#   make demo   set everything up, generate demo data and run the batch job on it (ends with the run summary)
#   make test   set everything up, lint (ruff, mypy) and run the test suite on both storage engines
# Set-up (`make setup`, run by both) installs the package into .venv and fetches the Delta Lake Spark jars
# into jars/lib/ with Maven (once; offline afterwards). Without Maven Central the jars are skipped with a
# message and the demo runs on the delta-rs engine; the tests then stop and say how to fetch them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PERSONS ?= 2000
LAKE ?= ./lake
# Test processes (pytest-xdist), each with its own local Spark session: 2 fits a 2-core machine (the suite is
# CPU-bound, so more do not help there); TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 2
COMPOSE := docker compose -f docker/docker-compose.yml

.PHONY: setup jars demo test lint notebook docker-demo docker-down clean

$(BIN)/audience-activation: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/audience-activation jars

# The Delta Lake Spark connector pinned in jars/pom.xml (see docs/storage.md).
jars:
	@jars/fetch.sh

demo: setup
	$(BIN)/audience-activation demo-data --persons $(PERSONS) --lake-root $(LAKE)
	$(BIN)/audience-activation validate --lake-root $(LAKE)
	$(BIN)/audience-activation run --lake-root $(LAKE)

test: setup
	$(BIN)/ruff check src tests jobs benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal

lint: setup
	$(BIN)/ruff check src tests jobs benchmarks
	$(BIN)/mypy

# JupyterLab on notebooks/ with the project's kernel (the .venv interpreter, registered as
# "audience-activation"); the notebook uses the delta-spark engine when the jars are in jars/lib/.
$(BIN)/jupyter-lab: setup.py
	$(BIN)/pip install --quiet -e '.[dev,notebook]'
	$(BIN)/python -m ipykernel install --sys-prefix --name audience-activation --display-name "audience-activation (.venv)"
	touch $@

notebook: setup $(BIN)/jupyter-lab
	$(BIN)/jupyter lab --notebook-dir=notebooks --ServerApp.ip=127.0.0.1

# The demo on the Docker Spark cluster of docker/docker-compose.yml (a master, two workers, JupyterLab):
# builds the image, starts the cluster, and submits demo-data, validate and run through spark-submit.sh.
docker-demo:
	$(COMPOSE) up -d --build --wait
	$(COMPOSE) exec spark-master /opt/audience-activation/docker/entrypoint.sh demo

docker-down:
	$(COMPOSE) down

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info $(LAKE) jars/lib
