# One entry point for developers and CI (.ci/run calls `make test`). See docs/development.md.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
SOURCE_PACKAGES := flowcore gateway workers pool scheduler sdk/agentainer_flow

.PHONY: help bootstrap lock up down status demo screenshot test test-unit test-integration test-e2e lint bench chaos loadtest clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

bootstrap: ## Debian packages, .venv, Docker engine and base image (only what is missing)
	scripts/bootstrap.sh

lock: ## write requirements.lock from .venv (after changing a dependency; bootstrap installs with it)
	scripts/lock.sh

up: bootstrap ## start the stack in the background (redis, engine, the Procfile under scripts/supervise.py)
	scripts/stack.sh up

down: ## stop the stack, remove its containers and its redis (dockerd keeps running)
	scripts/stack.sh down

status: ## what runs and what answers
	scripts/stack.sh status

demo: up ## build the example images if needed, run the example workflows on the running stack (it stays up: make down)
	scripts/build_example_images.sh >/dev/null
	$(PY) -m examples.demo

screenshot: up ## start the stack if needed, regenerate docs/img/dashboard-workflow.png and dashboard-agents.png in headless Chromium
	$(PY) scripts/screenshot_dashboard.py
	$(PY) scripts/screenshot_dashboard.py --agents

test: bootstrap ## the whole suite: unit, integration, e2e (real Redis and Docker)
	$(VENV)/bin/pytest

test-unit: bootstrap ## pure tests only, no services
	$(VENV)/bin/pytest tests/unit

test-integration: bootstrap ## tests on real Redis and Docker
	$(VENV)/bin/pytest tests/integration

test-e2e: bootstrap ## the Procfile processes driven over HTTP and the SDK
	$(VENV)/bin/pytest tests/e2e

lint: bootstrap ## ruff, then mypy --strict on the source packages (both run; fails if either fails)
	rc=0; \
	$(VENV)/bin/ruff check . || rc=1; \
	$(VENV)/bin/mypy $(SOURCE_PACKAGES) || rc=1; \
	exit $$rc

bench: up ## start the stack if needed, measure it side by side with Celery and cold containers, write BENCHMARKS.md (BENCH_ARGS=--help)
	$(PY) -c 'import celery' 2>/dev/null || $(VENV)/bin/pip install -q --progress-bar off -c requirements.lock -e '.[bench]'
	$(PY) -m bench $${BENCH_ARGS:-}

chaos: bootstrap ## kill and restart every process of a private stack under load, then Redis Sentinel failovers; count stuck, lost, duplicated, leaked (writes BENCHMARKS.md; one scenario: CHAOS_ARGS="--scenario sentinel")
	$(PY) -m chaos $${CHAOS_ARGS:-}

loadtest: up ## start the stack if needed, run the locust scenarios, check the counts, update BENCHMARKS.md
	$(PY) -m loadtests.run --time $${LOADTEST_TIME:-20s}

clean: ## remove caches and build output (keeps .venv, .flow data and images; `make down` first)
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist test-artifacts
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +
	find . -path ./.venv -prune -o -type d -name '*.egg-info' -exec rm -rf {} +
