# modelcycle — `make demo` and `make test` each create or refresh .venv, then run.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SHARED_DATA := $(abspath ../shared/data)
# Real MNIST / Fashion-MNIST beside the checkout, when there (never committed here).
ifneq ($(wildcard $(SHARED_DATA)/mnist),)
export MODELCYCLE_DATA_DIR ?= $(SHARED_DATA)
endif
export PIP_DISABLE_PIP_VERSION_CHECK := 1
DEMO_DIR := .demo/mnist-pytorch

.PHONY: setup demo test bench clean

setup: $(VENV)/.installed

# torch first, pinned to the CPU build; then the project and its extras (editable).
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 2>&1 | grep -v "is ignored" || true
	$(PY) -m pip install -q -e '.[all]' 2>&1 | grep -v "is ignored" || true
	$(PY) -c "import modelcycle, torch, fastapi, pytest"
	touch $@

demo: setup
	rm -rf $(DEMO_DIR)
	$(VENV)/bin/modelcycle init $(DEMO_DIR) --framework pytorch --example mnist
	set -e; trap '$(VENV)/bin/modelcycle -C $(DEMO_DIR) cleanup' EXIT; \
	  $(VENV)/bin/modelcycle -C $(DEMO_DIR) train; \
	  $(VENV)/bin/modelcycle -C $(DEMO_DIR) deploy; \
	  $(VENV)/bin/modelcycle -C $(DEMO_DIR) score --samples 10; \
	  $(VENV)/bin/modelcycle -C $(DEMO_DIR) status
	@echo "open the dashboard (runs, model, monitoring) with:"
	@echo "  modelcycle ui $(DEMO_DIR)"

# The example third-party adapter is installed the way a user installs one (not editable).
ADAPTER := tests/resources/modelcycle-example-adapter
$(VENV)/.adapter: $(VENV)/.installed $(wildcard $(ADAPTER)/pyproject.toml $(ADAPTER)/src/*/*.py)
	$(PY) -m pip install -q --no-build-isolation --no-deps --force-reinstall ./$(ADAPTER) 2>&1 | grep -v "is ignored" || true
	touch $@

# The example extras (a dataset and a governance backend) are installed the same way.
EXTRAS := tests/resources/modelcycle-example-extras
$(VENV)/.extras: $(VENV)/.installed $(wildcard $(EXTRAS)/pyproject.toml $(EXTRAS)/src/*/*.py)
	$(PY) -m pip install -q --no-build-isolation --no-deps --force-reinstall ./$(EXTRAS) 2>&1 | grep -v "is ignored" || true
	touch $@

test: setup $(VENV)/.adapter $(VENV)/.extras
	$(PY) -m pytest

# every benchmark, or some: make bench BENCH_ARGS="training serving --rounds 5"
bench: setup
	$(PY) bench/run_all.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .demo .pytest_cache
