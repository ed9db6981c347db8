# One entry point for every task; the README shows these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run test train lint format loadtest bench upgrade clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The versions the tests ran with (deploy/pin_constraints.py), so a new release on PyPI
# cannot change what a fresh clone installs. To upgrade: `make upgrade`.
SERVE_PINS := --constraint deploy/constraints.txt
ALL_PINS := $(SERVE_PINS) --constraint deploy/constraints-train.txt \
	--constraint deploy/constraints-dev.txt

# Serving only: no torch in this environment.
$(VENV)/.serve-installed: pyproject.toml deploy/constraints.txt | $(BIN)/python
	$(BIN)/pip install --quiet $(SERVE_PINS) -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml deploy/constraints*.txt | $(BIN)/python
	$(BIN)/pip install --quiet $(ALL_PINS) -e '.[dev]'
	touch $@ $(VENV)/.serve-installed

run: $(VENV)/.serve-installed  ## install, then serve models/ on $(PORT)
	$(BIN)/mnist-serve --models models/ --port $(PORT)

test: $(VENV)/.dev-installed  ## install the dev extra, then run every test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

train: $(VENV)/.dev-installed  ## reproduce the published models (adds a new version)
	$(BIN)/python -m training train --model mnist_mlp --out models/
	$(BIN)/python -m training train --model mnist_cnn --out models/

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

loadtest: $(VENV)/.dev-installed  ## 60 s headless Locust run against a server it starts
	$(BIN)/python -m loadtest $(LOADTEST_ARGS)

bench: $(VENV)/.dev-installed  ## throughput/latency table (see README "Benchmarks")
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

upgrade: | $(BIN)/python  ## newest releases the extras allow, then re-pin deploy/constraints*.txt
	$(BIN)/pip install --quiet --upgrade -e '.[dev]'
	$(BIN)/python deploy/pin_constraints.py
	touch $(VENV)/.dev-installed $(VENV)/.serve-installed

clean:
	rm -rf $(VENV) results .pytest_cache .ruff_cache
