# tritonforge: `make demo` and `make test` do all set-up on a fresh machine (Python 3.11, pip, apt).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tritonforge-setup
# pip finds the CPU build of torch 2.13.0 on this disk when it is there; elsewhere PyPI's index is used.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
APT_PACKAGES := redis-server chromium

.PHONY: setup demo test test-fast lint format bench clean gpu-smoke

setup: $(STAMP)

$(STAMP): requirements-lock.txt pyproject.toml
	@command -v redis-server >/dev/null && command -v chromium >/dev/null || \
	  { if [ "$$(id -u)" = 0 ]; then echo "[setup] apt-get install $(APT_PACKAGES)"; \
	      (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	    else echo "[setup] not root: install $(APT_PACKAGES) yourself for the Redis and HTML-report tests"; fi; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing Python packages into $(VENV) (first time: a few minutes)"
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q $(FIND_LINKS) -r requirements-lock.txt
	@$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)
	@echo "[setup] done: $$($(VENV)/bin/tritonforge --version)"

demo: setup
	@bash scripts/demo.sh

test: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(PY) scripts/typecheck.py
	@$(VENV)/bin/pytest -q

test-fast: setup
	@$(VENV)/bin/pytest -q -m "not server and not slow"

lint: setup
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(PY) scripts/typecheck.py

format: setup
	@$(VENV)/bin/ruff format .
	@$(VENV)/bin/ruff check --fix .

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# On a GPU host with Docker and the NGC image: build, serve and check the demo model, write
# out/smoke/smoke-report.json (IMAGE=... picks the container; without a GPU it says so and exits 2).
gpu-smoke: setup
	@$(VENV)/bin/tritonforge doctor $(if $(IMAGE),--docker $(IMAGE),) || true
	@$(VENV)/bin/tritonforge smoke --gpu $(if $(IMAGE),--image $(IMAGE),) -o $(or $(SMOKE_OUT),out/smoke)

clean:
	rm -rf out build dist *.egg-info .pytest_cache
