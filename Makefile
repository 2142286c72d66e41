# AdFlux Events — the one entry point for every routine task. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KAFKA_PORT ?= 9092
BROKERS ?= 1
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup kafka-jars kafka kafka-stop postgres up down status test test-unit test-chaos lint format schemas bench migration clean
.PHONY: container-tools images compose-up compose-down observe observe-stop browser screenshots

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) kafka-jars ## Virtualenv, Python dependencies and the Kafka broker's jars

kafka-jars: $(STAMP)
	$(PY) -m infra.kafka_broker jars

kafka: setup ## Start the local Kafka broker (KRaft) unless one answers; BROKERS=3: a cluster
	$(PY) -m infra.kafka_broker start --port $(KAFKA_PORT) --brokers $(BROKERS)

kafka-stop: ## Stop the broker(s) `make kafka` started (same BROKERS)
	$(PY) -m infra.kafka_broker stop --port $(KAFKA_PORT) --brokers $(BROKERS)

postgres: ## Ensure a local PostgreSQL answers (installs Debian's package when absent)
	infra/postgres.sh

up: setup ## Run the whole system in the background (.run/*.pid, .run/*.log)
	KAFKA_PORT=$(KAFKA_PORT) $(PY) -m infra.stack up

down: ## Stop what `make up` started (by PID, the broker only if `up` started it)
	$(PY) -m infra.stack down

status: ## Show which processes of `make up` are running
	$(PY) -m infra.stack status

test: setup container-tools browser ## Set up, start broker and database, run the whole test suite
	@set -o pipefail; \
	started=$$($(PY) -m infra.kafka_broker start --fresh --port $(KAFKA_PORT) | tee /dev/stderr | grep -c started || true); \
	export ADFLUX_TEST_DATABASE_URL="$${ADFLUX_TEST_DATABASE_URL:-$$(infra/postgres.sh)}"; \
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ "$$started" = "1" ]; then $(PY) -m infra.kafka_broker stop --port $(KAFKA_PORT); fi; \
	exit $$rc

container-tools: ## Install podman, mmdebstrap and Prometheus (promtool) from Debian when absent
	infra/podman.sh

browser: ## Install Debian's chromium and chromium-driver (the console's browser test) when absent
	infra/chromium.sh

screenshots: ## Screenshots of every console view, from its browser test, into docs/screenshots/
	$(MAKE) test PYTEST_ARGS="tests/e2e/test_console_browser.py" ADFLUX_SCREENSHOTS_DIR="$(CURDIR)/docs/screenshots"

images: setup container-tools ## Build every container image (each skipped when its inputs are unchanged)
	$(PY) -m infra.images.build

compose-up: setup container-tools ## Build the images, run compose.yaml, wait until healthy (set ADFLUX_API_TOKEN; BROKERS=3)
	$(PY) -m infra.images.compose up --brokers $(BROKERS)

compose-down: ## Remove what compose-up started: containers, network, volumes (same BROKERS)
	$(PY) -m infra.images.compose down --brokers $(BROKERS)

observe: setup container-tools ## Prometheus (Debian's) on 127.0.0.1:9090 scraping the processes of `make up`
	$(PY) -m infra.prometheus.observe start

observe-stop: ## Stop the Prometheus `make observe` started
	$(PY) -m infra.prometheus.observe stop

test-unit: setup ## Only the unit tests (no broker, no database)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

lint: setup ## ruff format --check, ruff check, mypy (--strict on shared, services and adplatforms)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict shared services adplatforms
	$(VENV)/bin/mypy infra bench tests

format: setup ## Apply ruff's formatting and fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

schemas: setup ## Regenerate schemas/ and asyncapi.yaml from the event models
	$(PY) -m shared.contracts write

bench: setup ## Benchmarks (issues #7 and #11) beside their targets (BENCH=side_by_side,... runs some)
	@$(PY) -c "import celery, redis" 2>/dev/null || $(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	@infra/redis.sh >/dev/null
	@started=$$($(PY) -m infra.kafka_broker start --port $(KAFKA_PORT) | grep -c started || true); \
	$(PY) -m bench $(BENCH_ARGS); rc=$$?; \
	if [ "$$started" = "1" ]; then $(PY) -m infra.kafka_broker stop --port $(KAFKA_PORT); fi; exit $$rc

migration: setup ## New Alembic migration: make migration SERVICE=gateway MSG="add x"
	$(PY) -c "import importlib, tempfile; from shared.db import Database; m = importlib.import_module('services.$(SERVICE).models').metadata; Database('', '$(SERVICE)', tempfile.mkdtemp()).autogenerate(m, '$(MSG)')"

clean: down ## Remove run state (.run) but keep caches
	rm -rf .run
