# streamstop developer entry points. Everything a fresh clone needs is created here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv kafka-fetch kafka-up kafka-down helm-fetch lint typecheck test demo bench clean

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

lint: venv
	$(BIN)/ruff check streamstop tests scripts benchmarks
	$(BIN)/ruff format --check streamstop tests scripts benchmarks
	$(BIN)/hadolint Dockerfile

typecheck: venv
	$(BIN)/mypy

test: venv kafka-fetch helm-fetch lint typecheck
	$(BIN)/pytest -q

# `make demo SECURE=1`: the daemon logs in over SASL_SSL (SCRAM-SHA-512) to a secured broker.
DEMO_KAFKA := $(if $(SECURE),.run/kafka-secure,.run/kafka)
demo: venv kafka-fetch
	scripts/kafka.sh $(if $(SECURE),up-secure,up) $(DEMO_KAFKA) >/dev/null
	$(BIN)/python scripts/demo.py "$$(scripts/kafka.sh bootstrap $(DEMO_KAFKA))" $(if $(SECURE),--secure $(DEMO_KAFKA)); \
		status=$$?; scripts/kafka.sh down $(DEMO_KAFKA); exit $$status

bench: venv kafka-up
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python benchmarks/bench.py "$$(scripts/kafka.sh bootstrap)"; status=$$?; scripts/kafka.sh down; exit $$status

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build
