# Fleetwave — `make demo` and `make test` work on a fresh machine: they create .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast check format bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## demo: start a coordinator and local agents, roll out a small HTTP service, clean up
demo: $(STAMP)
	$(BIN)/fleetwave demo

## test: the whole suite, slow end-to-end tests included
test: $(STAMP)
	$(BIN)/pytest

## test-fast: everything but the slow end-to-end tests
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

## check: lint, format check and strict typing
check: $(STAMP)
	$(BIN)/ruff check agent coordinator shared tests bench
	$(BIN)/ruff format --check agent coordinator shared tests bench
	$(BIN)/mypy

## bench: quick benchmarks against a real coordinator (< 3 min); `python -m bench.run full` for all
bench: $(STAMP)
	$(BIN)/python -m bench.run quick

format: $(STAMP)
	$(BIN)/ruff check --fix agent coordinator shared tests bench
	$(BIN)/ruff format agent coordinator shared tests bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info
