# Mina Mind backend. `make up` runs the product, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
export PYTHONPATH := $(CURDIR)

.PHONY: install up down status test lint fmt bench lock clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip uv >/dev/null
	$(UV) pip install -q --python $(PY) -r requirements.lock
	@bash scripts/system-deps.sh
	@touch $@

up: install
	$(PY) -m libs.devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m libs.devstack down; else echo "nothing to stop"; fi

status: install
	$(PY) -m libs.devstack status

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check libs services tests bench
	$(VENV)/bin/mypy libs services

fmt: install
	$(VENV)/bin/ruff check --fix libs services tests bench

bench: install
	$(PY) -m bench

# Regenerate the pinned lock file after changing pyproject.toml.
lock:
	$(UV) pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean: down
	@bash scripts/docker-engine.sh stop 2>/dev/null || true
	rm -rf .mina test-artifacts
