# streamstop developer entry points. Everything a fresh clone needs is created here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv kafka-fetch kafka-up kafka-down lint typecheck test demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

kafka-fetch:
	scripts/kafka.sh fetch

kafka-up: kafka-fetch
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

lint: venv
	$(BIN)/ruff check streamstop tests
	$(BIN)/ruff format --check streamstop tests

typecheck: venv
	$(BIN)/mypy

test: venv kafka-fetch lint typecheck
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build
