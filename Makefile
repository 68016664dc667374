# streamstop developer entry points. Everything a fresh clone needs is created here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv kafka-fetch kafka-up kafka-down helm-fetch asyncapi-fetch lint typecheck test demo bench clean

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

helm-fetch:
	scripts/helm.sh >/dev/null

asyncapi-fetch:
	scripts/asyncapi.sh fetch

lint: venv
	$(BIN)/ruff check streamstop tests scripts benchmarks examples
	$(BIN)/ruff format --check streamstop tests scripts benchmarks examples
	$(BIN)/hadolint Dockerfile

typecheck: venv
	$(BIN)/mypy

test: venv kafka-fetch helm-fetch asyncapi-fetch lint typecheck
	$(BIN)/pytest -q

demo: venv kafka-up
	$(BIN)/python scripts/demo.py "$$(scripts/kafka.sh bootstrap)"; status=$$?; scripts/kafka.sh down; exit $$status

bench: venv kafka-up
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench.py "$$(scripts/kafka.sh bootstrap)"; status=$$?; scripts/kafka.sh down; exit $$status

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build
