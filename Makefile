# streamstop developer entry points. Everything a fresh clone needs is created here.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# uv itself, pinned and hash-checked (requirements/uv.txt, exported from uv.lock), lives in
# its own venv: `uv sync` keeps .venv exactly as locked, so it cannot live there.
TOOLS := .tools
UV := $(TOOLS)/bin/uv
# uv uses the python3 on PATH and never downloads an interpreter of its own.
export UV_PYTHON := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
# Where `make sbom` writes; `make lock UPGRADE=all` (or package names) upgrades pins.
SBOM ?= dist/sbom.cdx.json
UPGRADE ?=
CACHE := $(or $(STREAMSTOP_CACHE),$(HOME)/.cache/streamstop)
# The slowest tests, listed at the end of `make test`.
DURATIONS ?= 15

.PHONY: venv lock lock-check sbom kafka-fetch kafka-up kafka-down helm-fetch promtool-fetch \
	asyncapi-fetch otelcol-fetch lint typecheck test demo bench clean clean-cache

$(UV): requirements/uv.txt
	rm -rf $(TOOLS)
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		--only-binary :all: -r requirements/uv.txt
	touch $@

# Exactly what uv.lock says, hashes checked; lock-check first fails if it is stale.
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync --frozen --quiet --extra dev
	touch $@

venv: lock-check $(STAMP)

lock: $(UV)
	UV=$(UV) scripts/lock.sh update $(UPGRADE)

lock-check: $(UV)
	UV=$(UV) scripts/lock.sh check

sbom: venv
	UV=$(UV) scripts/sbom.sh $(SBOM)

kafka-fetch:
	scripts/kafka.sh fetch

kafka-up: kafka-fetch
	scripts/kafka.sh up

kafka-down:
	scripts/kafka.sh down

helm-fetch:
	scripts/helm.sh >/dev/null

# promtool checks the chart's alert rules against scraped series (tests/test_alerts.py).
promtool-fetch:
	scripts/promtool.sh >/dev/null

# The AsyncAPI parser validates docs/asyncapi.yaml (tests/test_contract_asyncapi.py).
asyncapi-fetch:
	scripts/asyncapi.sh fetch

# An OpenTelemetry Collector, the OTLP receiver of tests/test_tracing_daemon.py (built once).
otelcol-fetch:
	scripts/otelcol.sh >/dev/null

lint: venv
	$(BIN)/ruff check streamstop tests scripts benchmarks examples
	$(BIN)/ruff format --check streamstop tests scripts benchmarks examples
	$(BIN)/hadolint Dockerfile

typecheck: venv
	$(BIN)/mypy

test: venv kafka-fetch helm-fetch promtool-fetch asyncapi-fetch otelcol-fetch lint typecheck
	$(BIN)/pytest -q --durations=$(DURATIONS)

# `make demo SECURE=1`: the daemon logs in over SASL_SSL (SCRAM-SHA-512) to a secured broker.
DEMO_KAFKA := $(if $(SECURE),.run/kafka-secure,.run/kafka)
demo: venv kafka-fetch
	scripts/kafka.sh $(if $(SECURE),up-secure,up) $(DEMO_KAFKA) >/dev/null
	$(BIN)/python scripts/demo.py "$$(scripts/kafka.sh bootstrap $(DEMO_KAFKA))" $(if $(SECURE),--secure $(DEMO_KAFKA)); \
		status=$$?; scripts/kafka.sh down $(DEMO_KAFKA); exit $$status

bench: venv kafka-up
	$(UV) sync --frozen --quiet --extra dev --extra bench
	$(BIN)/python benchmarks/bench.py "$$(scripts/kafka.sh bootstrap)"; status=$$?; scripts/kafka.sh down; exit $$status

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache .pytest_cache dist build

# The Kafka jars and the helm build, shared by every clone; the next run fetches them again.
clean-cache:
	@du -sh $(CACHE) 2>/dev/null || true
	rm -rf $(CACHE)
