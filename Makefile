# Conveyor: two commands do everything on a fresh machine.
#   make demo   set up, start the embedded stack, run the whole pipeline, serve a prediction
#   make test   set up and run the whole test suite (what CI runs)

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
UV_VERSION ?= 0.13.9
PYTEST_ARGS ?=
# `make demo PROFILE=distributed`: PostgreSQL + CeleryExecutor instead of SQLite + LocalExecutor.
ifdef PROFILE
export CONVEYOR_PROFILE := $(PROFILE)
endif


.PHONY: browser
# Debian's Chromium and its driver, for the browser tests (as root; skipped when already there)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

.PHONY: setup demo test test-e2e test-unit test-integration lint format down up status bench clean lock

setup: $(VENV)/.installed

$(UV):
	python3 -m pip install --user --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: requirements.txt pyproject.toml | $(UV)
	@test -x $(PY) || $(UV) venv $(VENV) --python 3.11 --quiet
	$(UV) pip install --python $(PY) --quiet -r requirements.txt
	$(UV) pip install --python $(PY) --quiet --no-deps -e .
	@touch $@

lock:  ## recompile requirements.txt from requirements.in (pinned, Python 3.11)
	$(UV) pip compile requirements.in --python-version 3.11 -o requirements.txt

demo: setup
	$(VENV)/bin/conveyor demo

up: setup
	$(VENV)/bin/conveyor up

status: setup
	$(VENV)/bin/conveyor status

down:
	@if [ -x $(VENV)/bin/conveyor ]; then $(VENV)/bin/conveyor down; else echo "nothing to stop (no $(VENV))"; fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: setup lint browser
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-e2e: setup
	$(VENV)/bin/pytest -m e2e $(PYTEST_ARGS)

test-unit: setup
	$(VENV)/bin/pytest -m "not integration" $(PYTEST_ARGS)

test-integration: setup
	$(VENV)/bin/pytest -m integration $(PYTEST_ARGS)

bench: setup  ## benchmarks against peers measured in the same run; writes bench/results/latest.{json,md}
	$(PY) -m bench

clean: down
	rm -rf .conveyor .pytest_cache .mypy_cache .ruff_cache

.PHONY: proto
# The OIP v2 gRPC modules from KServe's grpc_predict_v2.proto (grpcio-tools at the pinned grpcio's version;
# a generation-time tool only, not a runtime dependency)
proto: setup
	$(UV) pip install --python $(PY) --quiet "grpcio-tools==$$($(PY) -c 'import grpc; print(grpc.__version__)')"
	$(PY) -m grpc_tools.protoc -Iinclude --python_out=include --pyi_out=include --grpc_python_out=include \
	  include/conveyor/serving/grpc/grpc_predict_v2.proto
