# Two commands for a fresh Debian/Ubuntu machine: `make demo` and `make test`.
# Each installs what is missing: a virtualenv with the package, and Prometheus (apt).

VENV ?= .venv
PYTHON ?= python3
SCENARIO ?= good
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BIN := $(VENV)/bin

.PHONY: setup prometheus demo test test-faults test-strategies test-unit lint clean

setup: $(VENV)/.installed prometheus

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

prometheus:
	@command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || { \
	  echo "installing Prometheus (apt)"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus; }

## make demo [SCENARIO=good|bad-errors|bad-latency|shadow|shadow-bad|candidates|ab-win|ab-lose|aa|bandit]: a whole rollout on this machine
demo: setup
	$(BIN)/modelrollout demo --scenario $(SCENARIO)

## make test: lint, type-check, unit and integration tests
test: setup lint
	$(BIN)/pytest

## make test-faults: the fault-injection suite (kills, Prometheus and API faults, two replicas)
test-faults: setup
	$(BIN)/pytest -m faults

## make test-strategies: end to end A/B tests, shadow traffic, several candidates, bandits
test-strategies: setup
	$(BIN)/pytest -m strategies

test-unit: setup
	$(BIN)/pytest tests/unit

lint: $(VENV)/.installed
	$(BIN)/ruff check operator tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
